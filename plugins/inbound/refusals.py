"""Refusals counted per peer in memory: the first few of a minute are logged one by one,
the rest as one aggregated decision row per (peer, code, minute) with a count, and a peer
refused too often is tarpitted (421 4.7.0 to everything for a while).

An attacker probing addresses at 1,000 RCPT a second thus costs one row a minute, not a
thousand a second. The counters live in one gateway process; the aggregated rows are
written when their minute is over (on the next refusal, on a closed session, or when the
gateway stops).
"""
import dataclasses
import datetime as dt
import threading


@dataclasses.dataclass
class _Minute:
    minute: dt.datetime
    total: int = 0                 # refusals of this peer in this minute
    held: dict = dataclasses.field(default_factory=dict)  # code → [count, first reason, mail_from]


class RefusalLog:
    """Thread-safe: RCPT checks run on the gateway's worker threads, admission on its loop."""

    def __init__(self, burst: int, tarpit_after: int, tarpit_minutes: int):
        self.burst = burst
        self.tarpit_after = tarpit_after
        self.tarpit_for = dt.timedelta(minutes=tarpit_minutes)
        self._lock = threading.Lock()
        self._minutes: dict[str, _Minute] = {}
        self._tarpit: dict[str, dt.datetime] = {}
        self._pending: list = []  # aggregates of a minute that is over, not yet written

    def note(self, peer: str, code: int, reason: str, mail_from: str, now: dt.datetime) -> bool:
        """Count one refusal of `peer`; True when it is to be logged on its own row (within
        the burst), False when it was folded into the minute's aggregate."""
        minute = now.replace(second=0, microsecond=0)
        with self._lock:
            slot = self._minutes.get(peer)
            if slot is None or slot.minute != minute:
                if slot is not None and slot.held:
                    self._pending.append((peer, slot))
                slot = self._minutes[peer] = _Minute(minute)
            slot.total += 1
            if slot.total > self.tarpit_after and self.tarpit_for:
                self._tarpit[peer] = now + self.tarpit_for
            if slot.total <= self.burst:
                return True
            held = slot.held.setdefault(code, [0, reason, mail_from])
            held[0] += 1
            return False

    def tarpitted(self, peer: str, now: dt.datetime) -> bool:
        """True while `peer` is being answered 421 for refusing too often."""
        until = self._tarpit.get(peer)
        if until is None:
            return False
        if now >= until:
            with self._lock:
                self._tarpit.pop(peer, None)
            return False
        return True

    def take_due(self, now: dt.datetime, everything: bool = False) -> list[tuple]:
        """The aggregates whose minute is over (all of them with `everything`), removed from
        memory: [(peer, minute, code, count, first reason, mail_from)]."""
        minute = now.replace(second=0, microsecond=0)
        with self._lock:
            due, self._pending = list(self._pending), []
            for peer, slot in list(self._minutes.items()):
                if everything or slot.minute < minute:
                    if slot.held:
                        due.append((peer, slot))
                    del self._minutes[peer]
        return [(peer, slot.minute, code, count, reason, mail_from)
                for peer, slot in due for code, (count, reason, mail_from) in slot.held.items()]
