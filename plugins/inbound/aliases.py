"""Aliases (`alias add/list/remove`) and their contact policies."""
import email.utils
import json
import re

from postroom.core import records
from postroom.core.errors import Conflict, InvalidInput, NotFound
from postroom.core.models import Follower, Partner, Record

from .models import CONTACT_POLICIES, REQUIRE_AUTH, InboundAlias
from .recipients import system_local_parts

_LOCAL = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62})$")


def add_alias(host, local_part: str, model: str, record_id=None, contact: str = "everyone",
              defaults: str | dict | None = None, require_auth: str | None = None) -> InboundAlias:
    """Create an alias; checks the local part, the record type, the fixed record and the policy."""
    local = (local_part or "").strip().lower()
    if "@" in local:
        local, _, domain = local.partition("@")
        if domain not in host.config.domains:
            raise InvalidInput(f"{domain} is not one of this deployment's domains "
                               f"({', '.join(host.config.domains)})")
    if not _LOCAL.match(local) or "+" in local:
        raise InvalidInput(f"alias {local_part!r} is not a usable local part (letters, digits, . _ -)")
    if local in system_local_parts(host):
        raise Conflict(f"{local} is a system address of the gateway and cannot be an alias")
    records.check_model(host, model)
    if contact not in CONTACT_POLICIES:
        raise InvalidInput(f"contact policy must be one of {', '.join(CONTACT_POLICIES)}")
    if require_auth is not None and require_auth not in REQUIRE_AUTH:
        raise InvalidInput(f"--require-auth must be one of {', '.join(REQUIRE_AUTH)}")
    if record_id is not None:
        record_id = records.get_record(host, model, record_id).id
    elif contact == "followers":
        raise InvalidInput("--contact followers needs --record: only a fixed record has followers")
    if isinstance(defaults, str):
        try:
            defaults = json.loads(defaults)
        except ValueError as exc:
            raise InvalidInput(f"--defaults is not valid JSON: {exc}") from None
    if defaults is not None and not isinstance(defaults, dict):
        raise InvalidInput("--defaults must be a JSON object, e.g. '{\"priority\": \"high\"}'")
    with host.transaction():
        if InboundAlias.get_or_none(InboundAlias.local_part == local) is not None:
            raise Conflict(f"alias {local} already exists")
        alias = InboundAlias.create(local_part=local, model=model, record_id=record_id, contact=contact,
                                    defaults=defaults or None, require_auth=require_auth,
                                    created_at=host.clock.now())
    host.log.info("inbound alias %s added (%s%s, contact %s)", local, model,
                  f",{record_id}" if record_id else "", contact)
    return alias


def remove_alias(host, local_part: str) -> None:
    local = (local_part or "").strip().lower().split("@")[0]
    with host.transaction():
        removed = InboundAlias.delete().where(InboundAlias.local_part == local).execute()
    if not removed:
        raise NotFound(f"no alias {local}; see: postroom alias list")
    host.log.info("inbound alias %s removed", local)


def alias_rows(host) -> list[dict]:
    domain = host.config.primary_domain
    return [{"id": a.id, "alias": a.local_part, "address": f"{a.local_part}@{domain}", "model": a.model,
             "record_id": a.record_id, "contact": a.contact, "defaults": a.defaults,
             "require_auth": a.require_auth or "default"}
            for a in InboundAlias.select().order_by(InboundAlias.local_part)]


def reply_to(host, record) -> str | None:
    """The address of the alias that posts on `record`, as its mail's Reply-To
    (`"Record name" <alias@primary domain>`, the name RFC 2047-encoded when needed), or None."""
    alias = (InboundAlias.select(InboundAlias.local_part).where(InboundAlias.record_id == record.id)
             .order_by(InboundAlias.id).first())
    if alias is None:
        return None
    name = re.sub(r"[\x00-\x1f\x7f\"]+", " ", record.name or "").strip()
    return email.utils.formataddr((name, f"{alias.local_part}@{host.config.primary_domain}"), charset="utf-8")


def contact_refusal(host, alias: InboundAlias, sender: str | None, partner: Partner | None) -> str | None:
    """None when `sender` may write to `alias`; else the sentence saying why not."""
    if alias.contact == "everyone":
        return None
    who = sender or "an unknown sender"
    if partner is None:
        return f"{who} is not a known contact; only known partners may write to {alias.local_part}"
    if alias.contact == "followers":
        follows = (Follower.select().where((Follower.record == alias.record_id)
                                           & (Follower.partner == partner)).exists())
        if not follows:
            record = Record.get_or_none(Record.id == alias.record_id)
            name = f"{record.model},{record.id}" if record else f"record {alias.record_id}"
            return f"{who} does not follow {name}; only its followers may write to {alias.local_part}"
    return None
