"""The gateway's settings from `[postroom]` in postroom.cfg, with their defaults, and the
reply lines it speaks (Postfix-style enhanced status codes)."""
import dataclasses
import ipaddress

from postroom.core.errors import ConfigError

DEFAULTS = {
    "inbound_host": "127.0.0.1",
    "inbound_port": 2525,
    "inbound_lmtp": False,                    # `postroom serve` speaks LMTP instead of SMTP
    "inbound_max_size": 25 * 1024 * 1024,     # bytes; bigger → 552 5.3.4
    "inbound_max_recipients": 50,             # per transaction; more → 452 4.5.3
    "inbound_timeout": 300,                   # seconds a session may idle (and DATA may take)
    "inbound_workers": 4,                     # threads doing the database work
    "inbound_loop_max": 20,                   # records/messages one envelope sender or From may create ...
    "inbound_loop_max_peer": 100,             # ... and one client address ...
    "inbound_loop_minutes": 120,              # ... within this window
    "inbound_keep_originals_days": 30,
    "inbound_keep_log_days": 90,
    "inbound_max_connections": 200,           # open sessions in all; more → 421 4.7.0
    "inbound_max_connections_per_peer": 20,   # open sessions from one client address
    "inbound_session_max": 1800,              # seconds a session may last in all
    "inbound_max_idle_commands": 50,          # commands without a completed mail transaction
    "inbound_trusted_peers": "",              # MTAs in front of us (IPs or networks), exempt from peer caps
    "inbound_refusal_burst": 10,              # refusals per peer and minute logged one by one ...
    "inbound_tarpit_refusals": 100,           # ... more than this in a minute → 421 4.7.0 ...
    "inbound_tarpit_minutes": 10,             # ... for this long
    "inbound_spool_threshold": 1024 * 1024,   # message data above this goes to a temporary file
}

TEMPFAIL = "451 4.3.0 Temporary failure: the database is unavailable, try again later"
LOCAL_PROBLEM = "451 4.3.0 Temporary local problem, try again later"
TOO_MANY_RCPT = "452 4.5.3 Too many recipients"
LINE_TOO_LONG = "500 5.5.2 Line too long (over 1000 characters, see RFC 5321 4.5.3.1.6)"
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
BARE_LF = ("550 5.5.2 Bare <LF> or <CR> in message data refused "
           "(line endings must be <CR><LF>; SMTP smuggling protection)")
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections (inbound_max_connections), try again later"
TOO_MANY_FROM_PEER = "421 4.7.0 Too many connections from your address, try again later"
SESSION_TOO_LONG = "421 4.7.0 Session too long (inbound_session_max), closing; reconnect to continue"
TOO_MANY_COMMANDS = "421 4.7.0 Too many commands without a mail transaction, closing"
TARPIT = "421 4.7.0 Too many refused commands from your address; try again later"


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str
    port: int
    lmtp: bool
    max_size: int
    max_recipients: int
    timeout: float
    workers: int
    loop_max: int
    loop_max_peer: int
    loop_minutes: int
    keep_originals_days: int
    keep_log_days: int
    max_connections: int
    max_connections_per_peer: int
    session_max: float
    max_idle_commands: int
    trusted_peers: tuple
    refusal_burst: int
    tarpit_refusals: int
    tarpit_minutes: int
    spool_threshold: int

    def is_trusted(self, ip: str | None) -> bool:
        """True when `ip` is one of `inbound_trusted_peers` (an MTA relaying for others)."""
        if not ip or not self.trusted_peers:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in net for net in self.trusted_peers)


def _networks(values) -> tuple:
    """`inbound_trusted_peers` as networks; a bad entry is an error naming the key."""
    out = []
    for item in values:
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"config key 'inbound_trusted_peers': {item!r} is not an IP address or network") from None
    return tuple(out)


def settings(host) -> Settings:
    """The inbound keys (each defaulted) from the host's config; read once per config
    (routing asks for them on every message)."""
    cached = getattr(host, "_inbound_settings", None)
    if cached is not None and cached[0] is host.config:
        return cached[1]
    value = _read(host.config)
    host._inbound_settings = (host.config, value)
    return value


def _read(cfg) -> Settings:
    d = DEFAULTS

    def num(key, kind=int):
        getter = cfg.getfloat if kind is float else cfg.getint
        return getter(key, d[key])
    return Settings(
        host=cfg.get("inbound_host") or d["inbound_host"],
        port=num("inbound_port"),
        lmtp=cfg.getbool("inbound_lmtp", d["inbound_lmtp"]),
        max_size=num("inbound_max_size"),
        max_recipients=num("inbound_max_recipients"),
        timeout=num("inbound_timeout", float),
        workers=max(1, num("inbound_workers")),
        loop_max=num("inbound_loop_max"),
        loop_max_peer=num("inbound_loop_max_peer"),
        loop_minutes=num("inbound_loop_minutes"),
        keep_originals_days=num("inbound_keep_originals_days"),
        keep_log_days=num("inbound_keep_log_days"),
        max_connections=max(1, num("inbound_max_connections")),
        max_connections_per_peer=max(1, num("inbound_max_connections_per_peer")),
        session_max=num("inbound_session_max", float),
        max_idle_commands=max(1, num("inbound_max_idle_commands")),
        trusted_peers=_networks(cfg.getlist("inbound_trusted_peers")),
        refusal_burst=max(0, num("inbound_refusal_burst")),
        tarpit_refusals=max(1, num("inbound_tarpit_refusals")),
        tarpit_minutes=max(0, num("inbound_tarpit_minutes")),
        spool_threshold=max(0, num("inbound_spool_threshold")),
    )
