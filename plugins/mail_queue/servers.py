"""Outgoing SMTP servers: the config default, operator-added ones, choice by from_filter.
(Talking to them is `smtp_client`; counting against their daily limit is `daily_limit`.)"""
import dataclasses
import ssl

from postroom.core import emails
from postroom.core.errors import Conflict, InvalidInput, NotFound

from .models import MailServer, OutgoingMail
from .settings import ENCRYPTIONS

DEFAULT_NAME = "default"


@dataclasses.dataclass(frozen=True)
class Server:
    """What sending needs to know about one server (the default one or an added one)."""
    name: str
    host: str
    port: int
    encryption: str = "none"
    user: str | None = None
    password_env: str | None = None
    from_filter: str | None = None
    daily_limit: int | None = None
    timeout: float = 300.0          # each command's reply (RFC 5321 4.5.3.2: MAIL, RCPT 5 min)
    ca_file: str | None = None  # extra CA bundle to trust (config `smtp_ca_file`), like Postfix's smtp_tls_CAfile
    allow_plaintext_auth: bool = False  # config `smtp_allow_plaintext_auth`
    connect_timeout: float = 60.0   # TCP connect, greeting, EHLO, STARTTLS and AUTH, all together
    data_timeout: float = 600.0     # the reply to the final "." (RFC 5321 4.5.3.2.6: 10 min)

    def tls_context(self) -> ssl.SSLContext:
        """Certificates are always verified, against the system's CAs plus `ca_file`."""
        context = ssl.create_default_context()
        if self.ca_file:
            context.load_verify_locations(cafile=self.ca_file)
        return context

    @property
    def label(self) -> str:
        return f"{self.name} ({self.host}:{self.port}, {self.encryption})"


def default_server(host) -> Server:
    """The deployment's own server from the config; it always carries the daily limit."""
    v = host.config.value
    return Server(DEFAULT_NAME, v("smtp_host"), v("smtp_port"), v("smtp_encryption"), v("smtp_user"),
                  v("smtp_password_env"), None, v("daily_limit"), timeout(host), ca_file(host),
                  plaintext_auth(host), **phase_timeouts(host))


def timeout(host) -> float:
    return host.config.value("smtp_timeout")


def phase_timeouts(host) -> dict:
    """The other two SMTP timeouts, each bounding a whole phase (not one read):
    `smtp_connect_timeout` (connect, greeting, EHLO, STARTTLS, AUTH) and `smtp_data_timeout`
    (the reply to the end of the data, RFC 5321's 10 minutes). `smtp_timeout` bounds each
    command's reply. A timeout after the data was sent leaves the mail "may have been
    delivered"."""
    return {"connect_timeout": host.config.value("smtp_connect_timeout"),
            "data_timeout": host.config.value("smtp_data_timeout")}


def plaintext_auth(host) -> bool:
    return host.config.value("smtp_allow_plaintext_auth")


def ca_file(host) -> str | None:
    return host.config.path_of("smtp_ca_file") if host.config.get("smtp_ca_file") else None


def added_servers(host) -> list[Server]:
    return [Server(s.name, s.host, s.port, s.encryption, s.user, s.password_env, s.from_filter,
                   s.daily_limit, timeout(host), ca_file(host), plaintext_auth(host), **phase_timeouts(host))
            for s in MailServer.select().order_by(MailServer.id)]


class Chooser:
    """Picks the server for a sender: exact from_filter, then its domain, then an added
    server without filter, else the config default. Loaded once per run."""

    def __init__(self, host):
        self.default = default_server(host)
        self.servers = added_servers(host)

    def for_sender(self, address: str) -> Server:
        address = (address or "").lower()
        domain = address.rsplit("@", 1)[-1]
        for wanted in (address, domain):
            for server in self.servers:
                if server.from_filter and server.from_filter.lower() == wanted:
                    return server
        for server in self.servers:
            if not server.from_filter:
                return server
        return self.default


def _checked(smtp_host, port, encryption, user, password_env, from_filter, daily_limit) -> dict:
    """The stored form of a server's settings; InvalidInput naming the first unusable one.
    No setting may carry a control character (CR/LF would smuggle SMTP commands or log lines)."""
    for label, value in (("--host", smtp_host), ("--user", user), ("--password-env", password_env),
                         ("--from-filter", from_filter)):
        if value is not None and emails.has_control_chars(value):
            raise InvalidInput(f"{label} contains a line break or control character; refused")
    if not (smtp_host or "").strip():
        raise InvalidInput("--host is empty")
    encryption = (encryption or "none").lower()
    if encryption not in ENCRYPTIONS:
        raise InvalidInput(f"encryption must be one of {', '.join(ENCRYPTIONS)}")
    if not 0 < int(port) < 65536:
        raise InvalidInput(f"port {port} is out of range (1 to 65535)")
    if from_filter and "@" in from_filter:
        emails.split_address(from_filter)
    if daily_limit is not None and not 0 <= daily_limit <= 100_000_000:
        raise InvalidInput("the daily limit must be from 0 to 100000000")
    return {"host": smtp_host.strip(), "port": int(port), "encryption": encryption, "user": user or None,
            "password_env": password_env or None,
            "from_filter": (from_filter or None) and from_filter.lower(), "daily_limit": daily_limit}


def add_server(host, name, smtp_host, port, encryption="none", user=None, password_env=None,
               from_filter=None, daily_limit=None) -> MailServer:
    """Add a server; refused when the name is taken or a value is unusable."""
    name = (name or "").strip()
    if not name or emails.has_control_chars(name) or name == DEFAULT_NAME:
        raise InvalidInput(f"bad server name {name!r} ({DEFAULT_NAME!r} is reserved for the config's server)")
    values = _checked(smtp_host, port, encryption, user, password_env, from_filter, daily_limit)
    with host.transaction():
        if MailServer.get_or_none(MailServer.name == name):
            raise Conflict(f"a server named {name!r} already exists")
        return MailServer.create(name=name, created_at=host.clock.now(), **values)


def _added(name) -> MailServer:
    if name == DEFAULT_NAME:
        raise InvalidInput(f"the {DEFAULT_NAME!r} server is the config's (smtp_host, smtp_port, ...): "
                           f"change it in the config file")
    row = MailServer.get_or_none(MailServer.name == name)
    if row is None:
        raise NotFound(f"no server named {name!r} (see: postroom server list)")
    return row


def _refuse_while_claimed(host, name, doing):
    """Conflict while a running queue holds mails that are going out through `name`:
    changing it under them would send half a batch one way and half another."""
    now = host.clock.now()
    senders = [r.email_from for r in OutgoingMail.select(OutgoingMail.email_from).distinct().where(
        (OutgoingMail.state == "outgoing") & OutgoingMail.lease_until.is_null(False)
        & (OutgoingMail.lease_until >= now))]
    chooser = Chooser(host)
    if any(chooser.for_sender(sender).name == name for sender in senders):
        raise Conflict(f"cannot {doing} server {name!r} now: mail claimed by a running queue is being "
                       f"sent through it; try again when that run ends (its lease lasts at most "
                       f"mail_lease_seconds)")


def edit_server(host, name, **changes) -> MailServer:
    """Change some settings of an added server (a None value keeps the current one)."""
    with host.transaction():
        row = _added(name)
        current = {"smtp_host": row.host, "port": row.port, "encryption": row.encryption, "user": row.user,
                   "password_env": row.password_env, "from_filter": row.from_filter,
                   "daily_limit": row.daily_limit}
        current.update({k: v for k, v in changes.items() if v is not None})
        values = _checked(**current)
        _refuse_while_claimed(host, name, "edit")
        MailServer.update(**values).where(MailServer.id == row.id).execute()
    return MailServer.get_by_id(row.id)


def remove_server(host, name) -> None:
    """Remove an added server; mail for its senders then goes by the other servers."""
    with host.transaction():
        row = _added(name)
        _refuse_while_claimed(host, name, "remove")
        row.delete_instance()


def get_server(host, name) -> Server:
    if name == DEFAULT_NAME:
        return default_server(host)
    for server in added_servers(host):
        if server.name == name:
            return server
    raise NotFound(f"no server named {name!r} (see: postroom server list)")
