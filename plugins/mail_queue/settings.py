"""The bottom of mail_queue: the queue action's names and the settings every other module
reads, and its config keys (declared in its PluginInfo; see core/config.py). It imports
nothing from the plugin, so any module may import it."""
import datetime as dt
import re

from postroom.core.config import Key, domain_name
from postroom.core.emails import address_setting

ACTION_CODE = "mail_queue.process"
ACTION_NAME = "Mail: Email Queue Manager"
# Chunking is the core's (one size everywhere); re-exported for the plugin's modules.
from postroom.core.db import CHUNK, chunks  # noqa: F401


def lifetime(host) -> dt.timedelta:
    """How long a mail keeps being retried after temporary failures (`mail_lifetime_days`)."""
    return dt.timedelta(days=host.config.value("mail_lifetime_days"))


def lease(host) -> dt.timedelta:
    """How long a claim holds its mails (`mail_lease_seconds`) before another worker may
    take them over; a working worker renews it."""
    return dt.timedelta(seconds=host.config.value("mail_lease_seconds"))


def batch_size(host) -> int:
    """Mails claimed at once (`mail_batch_size`)."""
    return host.config.value("mail_batch_size")


# res_model of the attachments a direct mail (`mail send --attach`) holds itself.
ATTACHMENT_HOLDER = "mail_queue.mail"


ENCRYPTIONS = ("none", "starttls", "ssl")
_RATE = re.compile(r"^\s*([a-z0-9.*-]+)\s*=\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "h": 3600}


def domain_rates(text: str | None) -> dict:
    """`{domain: (mails per second, the entry as written)}` from `mail_domain_rate`
    (`gmail.com=20/s, yahoo.com=600/m, *=50/s`); ValueError naming a malformed entry."""
    rates = {}
    for item in [i for i in (text or "").split(",") if i.strip()]:
        match = _RATE.match(item)
        if not match or float(match.group(2)) <= 0:
            raise ValueError(f"not DOMAIN=N/s, N/m or N/h entries (bad entry {item.strip()!r}; e.g. "
                             f"gmail.com=20/s, *=50/s)")
        rates[match.group(1).lower().rstrip(".")] = (float(match.group(2)) / _UNIT[match.group(3).lower()],
                                                     item.strip())
    return rates


_CONCURRENCY = re.compile(r"^\s*([a-z0-9.*-]+)\s*=\s*(\d+)\s*$", re.IGNORECASE)
MAX_CONCURRENCY = 10_000


def domain_concurrency(text: str | None) -> dict:
    """`{domain: (most mails in flight at once, the entry as written)}` from
    `mail_domain_concurrency` (`gmail.com=2, *=10`); ValueError naming a malformed entry."""
    limits = {}
    for item in [i for i in (text or "").split(",") if i.strip()]:
        match = _CONCURRENCY.match(item)
        if not match or not 1 <= int(match.group(2)) <= MAX_CONCURRENCY:
            raise ValueError(f"not DOMAIN=N entries with N from 1 to {MAX_CONCURRENCY} (bad entry "
                             f"{item.strip()!r}; e.g. gmail.com=2, *=10)")
        limits[match.group(1).lower().rstrip(".")] = (int(match.group(2)), item.strip())
    return limits


KEYS = (
    Key("smtp_host", str, "127.0.0.1", empty=False, help="the default outgoing server"),
    Key("smtp_port", int, 25, min=1, max=65535, help="its port"),
    Key("smtp_encryption", str, "none", choices=ENCRYPTIONS,
        help="none, starttls or ssl (implicit TLS); any other value is refused"),
    Key("smtp_user", str, None, help="login on the default server (AUTH)"),
    Key("smtp_password_env", str, None, help="name of the environment variable holding its password"),
    Key("smtp_allow_plaintext_auth", bool, False,
        help="allow AUTH without TLS to a server that is not on loopback (doctor fails on it)"),
    Key("smtp_ca_file", str, None, help="a CA bundle to trust besides the system's"),
    Key("smtp_connect_timeout", float, 60.0, min=0.1, max=3600,
        help="seconds for connecting, the greeting, EHLO, STARTTLS and AUTH, all together"),
    Key("smtp_timeout", float, 300.0, min=0.1, max=3600,
        help="seconds for each command's whole reply (RFC 5321: 5 minutes)"),
    Key("smtp_data_timeout", float, 600.0, min=0.1, max=3600,
        help="seconds for the reply to the end of the data (RFC 5321: 10 minutes); past it the "
             "mail may have been delivered and is retried once, later, with the same Message-Id"),
    Key("mail_from", str, None, check=address_setting, what="one email address",
        help="default sender (default: the admin partner, else notifications@<domain>)"),
    Key("dkim_selector", str, "postroom", empty=False, check=domain_name, what="a DNS name",
        help="selector of new DKIM keys (`postroom dkim generate`): SELECTOR._domainkey.DOMAIN"),
    Key("mail_public_ip", list, [], what="IP addresses",
        help="the address(es) mail leaves from, when this host sits behind NAT (doctor's SPF check)"),
    Key("daily_limit", int, 200, min=0, max=100_000_000, help="emails per UTC day through the default server"),
    Key("mail_force_send_limit", int, 50, min=0, max=100_000,
        help="posts notifying more people go through the queue"),
    Key("mail_retry_min_minutes", float, 5.0, min=0.01, max=10080, help="shortest retry backoff"),
    Key("mail_retry_max_minutes", float, 60.0, min=0.01, max=10080, help="longest retry backoff"),
    Key("mail_lifetime_days", float, 5.0, min=0.01, max=365,
        help="temporary failures past this become exception"),
    Key("mail_batch_size", int, 200, min=1, max=10_000, help="mails claimed and recorded together"),
    Key("mail_lease_seconds", float, 300.0, min=1, max=86400,
        help="a worker's claim on its batch; a dead worker's mails are taken over after it"),
    Key("mail_domain_rate", str, None, check=domain_rates, what="DOMAIN=N/s, N/m or N/h, comma-separated",
        help="pacing per recipient domain, e.g. gmail.com=20/s, *=50/s (`*`: every other domain)"),
    Key("mail_domain_window_seconds", int, 10, min=1, max=3600,
        help="the window a domain's rate is counted over (20/s allows 200 per 10 s)"),
    Key("mail_domain_concurrency", str, None, check=domain_concurrency, what="DOMAIN=N, comma-separated",
        help="most mails in flight at once per recipient domain, across every worker, e.g. "
             "gmail.com=2, *=10 (`*`: each other domain; unset: no limit)"),
    Key("mail_domain_backoff_seconds", float, 60.0, min=1, max=86400,
        help="how long a domain that answered 421 / 4.7.x waits first (doubling after each refusal)"),
    Key("mail_domain_backoff_max_seconds", float, 3600.0, min=1, max=604800,
        help="the longest back-off of a domain"),
    Key("mail_keep_sent_days", float, 30.0, min=0, max=36500, help="the auto-vacuum keeps sent mails this long"),
    Key("mail_keep_canceled_days", float, 30.0, min=0, max=36500,
        help="the auto-vacuum keeps canceled mails this long"),
)
