"""Which recipient addresses the gateway takes, decided at RCPT time.

Valid: an alias, the bounce address (bare or `bounce+token`), the catchall, `postmaster`,
on one of the deployment's `domains` (case-insensitive), or an address another plugin
claims through `postroom_inbound_recipient`. Everything else is refused here, so unknown
mail never reaches DATA.
"""
import dataclasses

from postroom.core.db import chunks, select_all_later, select_first

from .models import InboundAlias

KINDS = ("alias", "bounce", "catchall", "postmaster", "claimed")
# Alias instances by their row's values, shared by every caller (who only read them): the
# row is read at every RCPT and again when the message is stored, and building the model
# instance cost more than the query.
_ALIASES: dict = {}


@dataclasses.dataclass
class Verdict:
    """The RCPT verdict for one address. `kind` is one of KINDS when accepted, else None."""
    address: str
    code: int
    text: str
    kind: str | None = None
    local: str = ""
    domain: str = ""
    alias: InboundAlias | None = None
    handler: object = None

    @property
    def accepted(self) -> bool:
        return self.kind is not None

    @property
    def line(self) -> str:
        return f"{self.code} {self.text}"


def split(address: str) -> tuple[str, str]:
    """(local part, domain) lower-cased; a bare `postmaster` has domain ''."""
    address = (address or "").strip().strip("<>").strip()
    local, at, domain = address.rpartition("@")
    if not at:
        return address.lower(), ""
    return local.lower(), domain.lower()


def unknown(address: str) -> Verdict:
    return Verdict(address, 550, f"5.1.1 <{address}>: Recipient address rejected: mailbox unavailable")


def check(host, address: str, aliases: dict | None = None, plugins: bool = True) -> Verdict | None:
    """The verdict for one RCPT address. Reads the database (aliases) and asks plugins;
    run it on a worker thread, not on the event loop, except with `plugins=False` on
    SQLite (reads of a local file, which the gateway's loop makes without waiting for a
    lock: `GatewayHandler._accepted_here`). `aliases` ({local part: alias or
    None}, from `find_aliases`) answers for the local parts it holds without a query.
    With `plugins=False`, None instead of asking them (a plugin's claim may do anything)."""
    local, domain = split(address)
    if not local:
        return Verdict(address, 501, "5.1.3 Bad recipient address syntax")
    if not domain:
        # RFC 5321 4.5.1: a bare <postmaster> must be accepted without a domain.
        if local == "postmaster":
            return Verdict(address, 250, "2.1.5 Ok", "postmaster", local, domain)
        return Verdict(address, 501, "5.1.3 Bad recipient address syntax")
    if domain not in host.config.domains:
        return Verdict(address, 550, f"5.7.1 relaying denied: <{address}> is not on this gateway's domains")
    ok = (250, "2.1.5 Ok")
    if local == "postmaster":
        return Verdict(address, *ok, "postmaster", local, domain)
    bounce = host.config.get("bounce").lower()
    if local == bounce or local.startswith(bounce + "+"):
        return Verdict(address, *ok, "bounce", local, domain)
    if local == host.config.get("catchall").lower():
        return Verdict(address, *ok, "catchall", local, domain)
    if aliases is not None and local in aliases:
        alias = aliases[local]
    else:  # written directly: asked at every RCPT and again when the message is stored
        alias = select_first(InboundAlias, 'SELECT * FROM "inbound_alias" WHERE "local_part" = {p}', (local,),
                             memo=_ALIASES)
    if alias is not None:
        return Verdict(address, *ok, "alias", local, domain, alias=alias)
    if not plugins:
        return None
    handler = host.hook.postroom_inbound_recipient(host=host, local_part=local, domain=domain)
    if handler is not None:
        return Verdict(address, *ok, "claimed", local, domain, handler=handler)
    return unknown(address)


def find_aliases(host, addresses) -> dict:
    """{local part: alias or None} for the local parts of `addresses`, in one query (the
    gateway's writer asks this once for a whole batch of messages)."""
    return find_aliases_later(host, addresses)()


def find_aliases_later(host, addresses):
    """`find_aliases` as a function to call for the answer (see `db.select_all_later`)."""
    locals_ = sorted({split(a)[0] for a in addresses} - {""})
    pending = [select_all_later(InboundAlias, 'SELECT * FROM "inbound_alias" WHERE "local_part" IN ('
                                + ", ".join(["{p}"] * len(part)) + ")", part, memo=_ALIASES)
               for part in chunks(locals_)]

    def result() -> dict:
        found = dict.fromkeys(locals_)
        for later in pending:
            for alias in later():
                found[alias.local_part] = alias
        return found
    return result


def system_local_parts(host) -> set:
    """Local parts the gateway itself answers to (an alias may not take one)."""
    return {"postmaster", host.config.get("bounce").lower(), host.config.get("catchall").lower(),
            "mailer-daemon"}
