"""The gateway's settings from `[postroom]` in postroom.cfg, with their defaults, and the
reply lines it speaks (Postfix-style enhanced status codes)."""
import dataclasses
import ipaddress

from postroom.core.config import Key
from postroom.core.errors import ConfigError

def _network(item):
    try:
        ipaddress.ip_network(item, strict=False)
    except ValueError:
        raise ValueError(f"{item!r} is not an IP address or network") from None


# The inbound keys (declared in the plugin's PluginInfo; see core/config.py).
KEYS = (
    Key("inbound_host", str, "127.0.0.1", empty=False, help="where `postroom serve` runs the gateway"),
    Key("inbound_port", int, 2525, min=1, max=65535, help="its port"),
    Key("inbound_lmtp", bool, False, help="`postroom serve` speaks LMTP instead of SMTP"),
    Key("inbound_max_size", int, 25 * 1024 * 1024, min=1, max=2**31,
        help="bytes; bigger messages get 552 5.3.4 (advertised as SIZE)"),
    Key("inbound_max_recipients", int, 50, min=1, max=10_000, help="per transaction; more get 452 4.5.3"),
    Key("inbound_timeout", float, 300.0, min=0.1, max=86400,
        help="seconds a session may idle (and a DATA may take)"),
    Key("inbound_workers", int, 4, min=1, max=256, help="threads doing the database work"),
    Key("inbound_commit_delay_ms", float, 0.5, min=0, max=100,
        help="at most how many milliseconds the writer waits for messages still on their way before storing a batch; 0: none"),
    Key("inbound_loop_max", int, 20, min=1, max=1_000_000_000,
        help="records/messages one envelope sender or From may create within inbound_loop_minutes"),
    Key("inbound_loop_max_peer", int, 100, min=1, max=1_000_000_000,
        help="the same for one client address"),
    Key("inbound_loop_minutes", int, 120, min=1, max=525_600, help="the loop protection window"),
    Key("inbound_keep_originals_days", int, 30, min=0, max=36500, help="the vacuum keeps originals this long"),
    Key("inbound_keep_log_days", int, 90, min=1, max=36500, help="the vacuum keeps the decision log this long"),
    Key("inbound_max_connections", int, 200, min=1, max=100_000, help="open sessions in all; more get 421 4.7.0"),
    Key("inbound_max_connections_per_peer", int, 20, min=1, max=100_000, help="open sessions from one client address"),
    Key("inbound_session_max", float, 1800.0, min=1, max=86400, help="seconds a session may last in all"),
    Key("inbound_max_idle_commands", int, 50, min=1, max=100_000,
        help="commands without a completed mail transaction"),
    Key("inbound_trusted_peers", list, [], check=_network, what="IP addresses or networks",
        help="MTAs in front of the gateway, exempt from the peer caps"),
    Key("inbound_refusal_burst", int, 10, min=0, max=100_000,
        help="refusals per peer and minute logged one by one"),
    Key("inbound_tarpit_refusals", int, 100, min=1, max=1_000_000,
        help="more refusals than this in a minute get 421 4.7.0 ..."),
    Key("inbound_tarpit_minutes", int, 10, min=0, max=1440, help="... for this long"),
    Key("inbound_spool_threshold", int, 1024 * 1024, min=0, max=2**31,
        help="bytes of message data above which it goes to a temporary file"),
)
DEFAULTS = {key.name: key.default for key in KEYS}

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
    commit_delay: float  # seconds
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
        commit_delay=num("inbound_commit_delay_ms", float) / 1000,
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
