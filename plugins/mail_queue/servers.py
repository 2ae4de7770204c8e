"""Outgoing SMTP servers: the config default, operator-added ones, choice by from_filter,
connecting, testing, and the exact daily limit."""
import dataclasses
import datetime as dt
import os
import smtplib
import ssl

from postroom.core import emails
from postroom.core.db import is_postgres
from postroom.core.errors import Conflict, InvalidInput, NotFound

from .models import DailyCount, MailServer

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


def connect(server: Server) -> smtplib.SMTP:
    """An open, greeted (and if asked, encrypted and logged-in) SMTP connection."""
    if server.encryption == "ssl":
        conn = smtplib.SMTP_SSL(server.host, server.port, timeout=server.timeout,
                                context=server.tls_context())
    else:
        conn = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
    conn.ehlo()
    if server.encryption == "starttls":
        conn.starttls(context=server.tls_context())
        conn.ehlo()
    if server.user:
        password = os.environ.get(server.password_env or "", "")
        conn.login(server.user, password)
    return conn


def test_server(server: Server) -> str:
    """Connect, EHLO (and TLS/login as configured); return the server's EHLO answer."""
    conn = connect(server)
    try:
        code, answer = conn.ehlo()
        return f"{code} {answer.decode(errors='replace')}"
    finally:
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            pass


# --- the daily limit ---------------------------------------------------------------

def day_of(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%d")


def reset_at(now: dt.datetime) -> dt.datetime:
    return dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=now.tzinfo)


def reserve(host, server: Server, wanted: int) -> int:
    """Take up to `wanted` slots of today's count for `server`; returns how many were granted.

    Runs in its own short transaction, before any SMTP conversation: a compare-and-set
    UPDATE (`WHERE count = <seen>`, checked through the row count) so that concurrent
    workers can never grant more than the limit between them."""
    if server.daily_limit is None or wanted <= 0:
        return wanted
    day = day_of(host.clock.now())
    for _ in range(50):
        with host.transaction():
            DailyCount.insert(server=server.name, day=day, count=0).on_conflict_ignore().execute()
            query = DailyCount.select(DailyCount.count).where(
                (DailyCount.server == server.name) & (DailyCount.day == day))
            if is_postgres(host.db):
                query = query.for_update()
            seen = query.scalar()
            granted = max(0, min(wanted, server.daily_limit - seen))
            if granted == 0:
                return 0
            done = (DailyCount.update(count=DailyCount.count + granted)
                    .where((DailyCount.server == server.name) & (DailyCount.day == day)
                           & (DailyCount.count == seen)).execute())
        if done == 1:
            return granted
    return 0


def release(host, server: Server, unused: int) -> None:
    """Give back slots taken by `reserve` that were not used (the mail did not leave)."""
    if server.daily_limit is None or unused <= 0:
        return
    day = day_of(host.clock.now())
    with host.transaction():
        (DailyCount.update(count=DailyCount.count - unused)
         .where((DailyCount.server == server.name) & (DailyCount.day == day)
                & (DailyCount.count >= unused)).execute())


def today_count(host, server_name: str = DEFAULT_NAME) -> int:
    row = DailyCount.get_or_none((DailyCount.server == server_name)
                                 & (DailyCount.day == day_of(host.clock.now())))
    return row.count if row else 0


def limit_status(host, server: Server | None = None) -> dict:
    """Today's count on a server (the default one unless given), its limit and when the
    count resets."""
    now = host.clock.now()
    server = server or default_server(host)
    count = today_count(host, server.name)
    return {"server": server.name, "day": day_of(now), "count": count, "limit": server.daily_limit,
            "remaining": max(0, server.daily_limit - count), "resets_at": reset_at(now)}


def limit_statuses(host) -> list[dict]:
    """The default server's status, then each added server that has its own limit."""
    return [limit_status(host)] + [limit_status(host, s) for s in added_servers(host)
                                   if s.daily_limit is not None]


def limit_reason(host, server: Server) -> str:
    now = host.clock.now()
    return (f"Daily limit reached: {today_count(host, server.name)} emails sent today through "
            f"server '{server.name}' (limit {server.daily_limit}); the count resets at "
            f"{reset_at(now):%Y-%m-%d %H:%M} UTC. Retry the mail then, raise daily_limit, or add "
            f"an outgoing server of your own (postroom server add).")
