"""Pacing per destination domain, and backing off a domain that says "slow down".

`mail_domain_rate = gmail.com=20/s, yahoo.com=600/m, *=50/s` caps what leaves for each
recipient domain (`*` for every other; no entry, no cap). The cap holds for the whole
deployment: each domain's count for the current window (`mail_domain_window_seconds`,
10) is a row that workers reserve from before talking SMTP, like the daily limit, so a
rate of 20/s allows 200 mails per 10-second window across all workers. What a window
cannot take waits for the next one.

When a server answers a mail for a domain with an enhanced status 4.7.x, or 421 for one
recipient ("too many connections/messages"), that domain is backed off: its mails wait
`mail_domain_backoff_seconds` (60), doubling at each new refusal up to
`mail_domain_backoff_max_seconds` (3600), while other domains keep flowing. The first
mail it accepts again ends the back-off. Waiting mails stay `outgoing`, not failed and
not counted as attempts, with the reason in `failure_reason` (`queue list` shows it).
"""
import collections
import dataclasses
import datetime as dt
import re

from postroom.core.clock import aware
from postroom.core.db import is_postgres
from postroom.core.errors import ConfigError

from .models import DomainPace
from .settings import domain_rates

_THROTTLE = re.compile(r"^\s*4\.7\.\d{1,3}\b")


@dataclasses.dataclass(frozen=True)
class Rate:
    per_second: float
    text: str  # as the operator wrote it, for the reasons shown


def parse_rates(text: str | None) -> dict[str, Rate]:
    """`{domain: Rate}` from `mail_domain_rate`; ConfigError naming a malformed entry."""
    try:
        return {d: Rate(per_second, written) for d, (per_second, written) in domain_rates(text).items()}
    except ValueError as exc:
        raise ConfigError(f"config key 'mail_domain_rate': {exc}") from None


def is_throttle(code: int | None, text, at_rcpt: bool = False) -> bool:
    """A receiver's "slow down": a 4xx whose enhanced status is 4.7.x (RFC 3463, security
    or policy, which large receivers use for rate limits: 421 4.7.0, 450 4.7.1,
    451 4.7.28 ...), or a 421 given for one recipient. A 421 to the whole transaction
    without 4.7.x ("4.3.2 shutting down") is the server's trouble, not the domain's: it is
    retried per mail like any temporary failure."""
    if code is None or not 400 <= code < 500:
        return False
    words = text.decode(errors="replace") if isinstance(text, bytes) else str(text or "")
    return bool(_THROTTLE.match(words)) or (code == 421 and at_rcpt)


def domain_of(address: str | None) -> str:
    return (address or "").rpartition("@")[2].lower().rstrip(".")


def _window(host) -> int:
    return host.config.value("mail_domain_window_seconds")


class Pacer:
    """Pacing and back-off state of the domains of one delivery, read in one query and
    written back in one transaction per change (never per mail)."""

    def __init__(self, host, domains):
        self.host = host
        self.rates = parse_rates(host.config.value("mail_domain_rate"))
        self.now = host.clock.now()
        self.first = dt.timedelta(seconds=host.config.value("mail_domain_backoff_seconds"))
        self.most = dt.timedelta(seconds=host.config.value("mail_domain_backoff_max_seconds"))
        wanted = sorted(set(domains))
        self.state = {p.domain: p for p in DomainPace.select().where(DomainPace.domain.in_(wanted or [""]))}
        self.waits: dict[str, tuple[dt.datetime, str]] = {}  # domain: (until, reason)
        self.changed: dict[str, dict] = {}  # domain: back-off values to write
        self.recovered: set = set()
        self.next_window = self.now
        for domain, pace in self.state.items():
            until = aware(pace.backoff_until)
            if until is not None and until > self.now:
                self.waits[domain] = (until, pace.reason or "")

    def rate_of(self, domain: str) -> Rate | None:
        return self.rates.get(domain) or self.rates.get("*")

    def reserve(self, counts: dict) -> dict:
        """How many mails each domain may send now (`counts`: wanted per domain), taken from
        the deployment-wide window counts in one transaction."""
        window = _window(self.host)
        start_epoch = int(self.now.timestamp()) // window * window
        start = dt.datetime.fromtimestamp(start_epoch, tz=self.now.tzinfo)
        self.next_window = start + dt.timedelta(seconds=window)
        granted = {}
        paced = {d: n for d, n in counts.items() if self.rate_of(d) is not None and d not in self.waits}
        if not paced:
            return {d: n for d, n in counts.items()}
        with self.host.transaction():
            query = DomainPace.select().where(DomainPace.domain.in_(sorted(paced)))
            if is_postgres(self.host.db):
                query = query.for_update()
            rows = {p.domain: p for p in query}
            fresh = [d for d in paced if d not in rows]
            if fresh:
                DomainPace.insert_many([{"domain": d, "window_start": start, "window_count": 0}
                                        for d in fresh]).on_conflict_ignore().execute()
                rows.update({p.domain: p for p in DomainPace.select().where(DomainPace.domain.in_(fresh))})
            for domain, wanted in paced.items():
                row = rows[domain]
                used = row.window_count if aware(row.window_start) == start else 0
                allowance = int(self.rate_of(domain).per_second * window)
                granted[domain] = max(0, min(wanted, allowance - used))
                (DomainPace.update(window_start=start, window_count=used + granted[domain])
                 .where(DomainPace.domain == domain).execute())
        return {d: granted.get(d, n) for d, n in counts.items()}

    def paced_reason(self, domain: str) -> str:
        return (f"waiting: pacing {self.rate_of(domain).text} (mail_domain_rate); next window at "
                f"{self.next_window:%H:%M:%S} UTC")

    def throttled(self, domain: str, reply: str) -> tuple[dt.datetime, str]:
        """The domain refused with a slow-down reply: back it off (doubling) and say until when."""
        if domain in self.waits:
            return self.waits[domain]
        pace = self.state.get(domain)
        last = dt.timedelta(seconds=pace.backoff_seconds) if pace and pace.backoff_seconds else None
        delay = min(self.most, last * 2) if last else self.first
        until = self.now + delay
        reason = (f"waiting: {domain} asked to slow down ({reply.strip()[:300]}); its mail is deferred "
                  f"until {until:%H:%M:%S} UTC (back-off {int(delay.total_seconds())} s)")
        self.waits[domain] = (until, reason)
        self.recovered.discard(domain)
        self.changed[domain] = {"backoff_until": until, "backoff_seconds": delay.total_seconds(),
                                 "reason": reason[:2000]}
        self.host.log.warning("mail: %s", reason)
        return until, reason

    def accepted(self, domain: str) -> None:
        pace = self.state.get(domain)
        if pace is not None and pace.backoff_seconds and domain not in self.waits:
            self.recovered.add(domain)

    def save(self) -> None:
        """Write the back-offs begun and ended by this delivery (a statement per domain)."""
        changed = dict(self.changed)
        for domain in self.recovered:
            changed[domain] = {"backoff_until": None, "backoff_seconds": 0, "reason": None}
            self.host.log.info("mail: %s accepts mail again; its back-off ends", domain)
        if not changed:
            return
        with self.host.transaction():
            DomainPace.insert_many([{"domain": d, "window_count": 0} for d in changed]).on_conflict_ignore().execute()
            for domain, values in changed.items():
                DomainPace.update(**values).where(DomainPace.domain == domain).execute()


def split(host, rows, address_of=lambda row: row.email_to):
    """(pacer, rows to send now in their order, [(row, until, reason)] to defer)."""
    by_domain = collections.defaultdict(list)
    for row in rows:
        by_domain[domain_of(address_of(row))].append(row)
    pacer = Pacer(host, by_domain)
    if not pacer.rates and not pacer.waits:
        return pacer, list(rows), []
    granted = pacer.reserve({d: len(r) for d, r in by_domain.items()})
    send, defer = [], []
    taken = collections.Counter()
    for row in rows:
        domain = domain_of(address_of(row))
        if domain in pacer.waits:
            until, reason = pacer.waits[domain]
            defer.append((row, until, reason))
        elif taken[domain] >= granted[domain]:
            defer.append((row, pacer.next_window, pacer.paced_reason(domain)))
        else:
            taken[domain] += 1
            send.append(row)
    return pacer, send, defer
