"""Outgoing SMTP servers: the config default, operator-added ones, choice by from_filter.
(Talking to them is `smtp_client`; counting against their daily limit is `daily_limit`.)"""
import dataclasses
import ssl

from postroom.core import emails
from postroom.core.errors import Conflict, InvalidInput, NotFound

from .models import MailServer

DEFAULT_NAME = "default"
ENCRYPTIONS = ("none", "starttls", "ssl")


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
    timeout: float = 30.0
    ca_file: str | None = None  # extra CA bundle to trust (config `smtp_ca_file`), like Postfix's smtp_tls_CAfile

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
    return Server(DEFAULT_NAME, host.config.get("smtp_host", "127.0.0.1"),
                  host.config.getint("smtp_port", 25), host.config.get("smtp_encryption", "none"),
                  host.config.get("smtp_user"), host.config.get("smtp_password_env"), None,
                  host.config.getint("daily_limit", 200), timeout(host), ca_file(host))


def timeout(host) -> float:
    return host.config.getfloat("smtp_timeout", 30.0)


def ca_file(host) -> str | None:
    return host.config.path_of("smtp_ca_file") if host.config.get("smtp_ca_file") else None


def added_servers(host) -> list[Server]:
    return [Server(s.name, s.host, s.port, s.encryption, s.user, s.password_env, s.from_filter,
                   s.daily_limit, timeout(host), ca_file(host)) for s in MailServer.select().order_by(MailServer.id)]


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


def add_server(host, name, smtp_host, port, encryption="none", user=None, password_env=None,
               from_filter=None, daily_limit=None) -> MailServer:
    """Add a server; refused when the name is taken or a value is unusable."""
    name = (name or "").strip()
    if not name or emails.has_control_chars(name) or name == DEFAULT_NAME:
        raise InvalidInput(f"bad server name {name!r} ({DEFAULT_NAME!r} is reserved for the config's server)")
    if encryption not in ENCRYPTIONS:
        raise InvalidInput(f"encryption must be one of {', '.join(ENCRYPTIONS)}")
    if not 0 < int(port) < 65536:
        raise InvalidInput(f"port {port} is out of range")
    if from_filter and "@" in from_filter:
        emails.split_address(from_filter)
    if daily_limit is not None and daily_limit < 0:
        raise InvalidInput("the daily limit cannot be negative")
    with host.transaction():
        if MailServer.get_or_none(MailServer.name == name):
            raise Conflict(f"a server named {name!r} already exists")
        return MailServer.create(name=name, host=smtp_host, port=int(port), encryption=encryption,
                                 user=user, password_env=password_env,
                                 from_filter=(from_filter or None) and from_filter.lower(),
                                 daily_limit=daily_limit, created_at=host.clock.now())


def get_server(host, name) -> Server:
    if name == DEFAULT_NAME:
        return default_server(host)
    for server in added_servers(host):
        if server.name == name:
            return server
    raise NotFound(f"no server named {name!r} (see: postroom server list)")
