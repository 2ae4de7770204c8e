"""What the gateway's event loop learned at recent RCPTs, so that the next RCPT to the same
alias from the same sender is answered without reading the database again. On SQLite the
loop reads the database itself on a miss (`GatewayHandler._accepted_here`); on PostgreSQL
the loop never touches the database, so it answers from the memo alone
(`GatewayHandler._remembered`) and a miss goes to the pool, whose answer fills the memo.

Reading the alias and then the loop-protection counts of the envelope sender and the
client took two statements per message: in the smtp-source bench (8 sessions, every
message to one alias) they were a third of the loop thread's CPU on SQLite (0.12 of 0.34
ms per message), and each of them let go of the interpreter lock and waited for the
writer thread to hand it back. On PostgreSQL each RCPT was a round trip to a pool thread
and two statements on the server. For `MEMO_SECONDS` of `host.clock` the memo keeps:

- each alias it found: an RCPT to it is accepted without a query. An alias deleted
  meanwhile is still accepted at RCPT for that long; the writer looks every recipient up
  again when it stores the message, so that message is refused then (550 after DATA,
  logged like any refusal) and creates nothing.
- each key's count, plus every recipient this gateway accepted for it since (a message to
  two aliases makes two counted rows; one to a repeated or a single recipient counts at
  most one too many, which only means reading the count sooner): the RCPT passes without
  a query while that sum is below the key's limit. Messages another process (a second
  gateway) stored meanwhile are missed for that long; the writer counts
  every key again in the transaction that stores the message, so the limit itself holds,
  and the sender is then refused after DATA rather than at RCPT.

A key at its limit, an address that is not an alias and every refusal always go to the
database. Used on the loop thread only (a pool thread's findings are handed back to the
loop, which keeps them): no lock.
"""
import datetime as dt

from . import routing
from .settings import settings

MEMO_SECONDS = 1.0
# Entries kept at most (aliases, and keys): a stranger rotating envelope senders or
# clients fills it, and it starts again; a real alias or sender is then read once more.
MEMO_MAX = 4096


class RcptMemo:
    """See the module docstring."""

    def __init__(self, host, seconds: float = MEMO_SECONDS):
        self.host = host
        self.span = dt.timedelta(seconds=seconds)
        self._aliases = {}  # local part -> (alias, valid until)
        self._counts = {}  # (key name, value) -> [count since read, valid until]

    def alias(self, local: str, now) -> dict | None:
        """{local: alias} when an alias for `local` was found lately (for `recipients.check`'s
        `aliases`), else None (ask the database)."""
        entry = self._aliases.get(local)
        if entry is None or entry[1] <= now:
            return None
        return {local: entry[0]}

    def found_alias(self, local: str, alias, now):
        if len(self._aliases) >= MEMO_MAX:
            self._aliases.clear()
        self._aliases[local] = (alias, now + self.span)

    def loop_refusal(self, envelope: str, client: str, now) -> str | None:
        """`routing.loop_refusal` for the envelope sender and the client, read from the
        database unless each key's count lately plus what was accepted since is below its
        limit."""
        if self.within_limits(envelope, client, now):
            return None
        counts = routing.loop_counts(self.host, envelope, client=client)
        refusal = routing.loop_refusal(self.host, envelope, client=client, counts=counts)
        if refusal is None:
            self.found_counts(envelope, client, counts, now)
        return refusal

    def _keys(self, envelope: str, client: str) -> list[tuple]:
        s = settings(self.host)
        return [(name, value, limit) for name, value, limit in
                (("envelope", envelope, s.loop_max), ("peer", client, s.loop_max_peer)) if value]

    def within_limits(self, envelope: str, client: str, now) -> bool:
        """Whether each key's count lately plus what was accepted since is below its limit
        (False when a key was not read lately: ask the database)."""
        return all(self._below(name, value, limit, now) for name, value, limit in self._keys(envelope, client))

    def found_counts(self, envelope: str, client: str, counts: dict, now):
        """Keep `routing.loop_counts` just read for these keys (when they refused nothing)."""
        if len(self._counts) >= MEMO_MAX:
            self._counts.clear()
        for name, value, _ in self._keys(envelope, client):
            self._counts[(name, value)] = [counts[name], now + self.span]

    def _below(self, name, value, limit, now) -> bool:
        entry = self._counts.get((name, value))
        return entry is not None and entry[1] > now and entry[0] < limit

    def accepted(self, envelope: str, client: str, recipients: int):
        """A message from `envelope` through `client` was accepted for `recipients`: they
        count against both keys until those are read again (whatever route each took)."""
        if recipients <= 0:
            return
        for key in (("envelope", envelope), ("peer", client)):
            entry = self._counts.get(key)
            if entry is not None:
                entry[0] += recipients
