"""The gateway's settings from `[postroom]` in postroom.cfg, with their defaults, and the
reply lines it speaks (Postfix-style enhanced status codes)."""
import dataclasses

DEFAULTS = {
    "inbound_host": "127.0.0.1",
    "inbound_port": 2525,
    "inbound_lmtp": False,                    # `postroom serve` speaks LMTP instead of SMTP
    "inbound_max_size": 25 * 1024 * 1024,     # bytes; bigger → 552 5.3.4
    "inbound_max_recipients": 50,             # per transaction; more → 452 4.5.3
    "inbound_timeout": 300,                   # seconds a session may idle (and DATA may take)
    "inbound_workers": 4,                     # threads doing the database work
    "inbound_loop_max": 20,                   # records/messages one sender may create ...
    "inbound_loop_minutes": 120,              # ... within this window
    "inbound_keep_originals_days": 30,
    "inbound_keep_log_days": 90,
}

TEMPFAIL = "451 4.3.0 Temporary failure: the database is unavailable, try again later"
LOCAL_PROBLEM = "451 4.3.0 Temporary local problem, try again later"
TOO_MANY_RCPT = "452 4.5.3 Too many recipients"
LINE_TOO_LONG = "500 5.5.2 Line too long (over 1000 characters, see RFC 5321 4.5.3.1.6)"
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
BARE_LF = ("550 5.5.2 Bare <LF> or <CR> in message data refused "
           "(line endings must be <CR><LF>; SMTP smuggling protection)")


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
    loop_minutes: int
    keep_originals_days: int
    keep_log_days: int


def settings(host) -> Settings:
    """Read the inbound keys (each defaulted) from the host's config."""
    cfg = host.config
    d = DEFAULTS
    return Settings(
        host=cfg.get("inbound_host") or d["inbound_host"],
        port=cfg.getint("inbound_port", d["inbound_port"]),
        lmtp=cfg.getbool("inbound_lmtp", d["inbound_lmtp"]),
        max_size=cfg.getint("inbound_max_size", d["inbound_max_size"]),
        max_recipients=cfg.getint("inbound_max_recipients", d["inbound_max_recipients"]),
        timeout=cfg.getfloat("inbound_timeout", d["inbound_timeout"]),
        workers=max(1, cfg.getint("inbound_workers", d["inbound_workers"])),
        loop_max=cfg.getint("inbound_loop_max", d["inbound_loop_max"]),
        loop_minutes=cfg.getint("inbound_loop_minutes", d["inbound_loop_minutes"]),
        keep_originals_days=cfg.getint("inbound_keep_originals_days", d["inbound_keep_originals_days"]),
        keep_log_days=cfg.getint("inbound_keep_log_days", d["inbound_keep_log_days"]),
    )
