"""The ledger of one claim's progress: each mail's outcome committed right after the server's
answer (while the server reads the next mail's commands), so a crash repeats at most the
mail in flight. The same commit marks the next mail in flight and checks that the claim
still holds it; every third of a lease it renews the claim."""
import collections
import time

import peewee as pw

from postroom.core.db import run_prepared

from .models import OutgoingMail
from .outcomes import Outcome, info_of, log_written, write
from .settings import lease

M = OutgoingMail


class Ledger:
    """The durable record of one claim's progress (one per server conversation).

    `flush(mark=row)` writes what is pending and, in the same transaction, marks `row` in
    flight and checks that the claim still holds it; every third of a lease it also
    renews the claim's lease. The sending code announces the outcomes
    (`outcomes.announce`) once the batch is done."""

    def __init__(self, host, token: str, claimed_ids, stop=None):
        self.host, self.token = host, token
        self.stop = stop or (lambda: False)  # SIGTERM: stop waiting for the database
        self.pending = Outcome()
        self.sent_info, self.failed_info = [], []
        self.owned = set(claimed_ids)
        self.lease = lease(host)
        self.renewed_at = self.marked_at = time.monotonic()

    def flush(self, mark=None) -> bool:
        """Write the pending outcomes (and mark `mark` in flight); returns whether `mark`
        is still ours (True without one)."""
        pending, self.pending = self.pending, Outcome()
        return self._write(pending, mark)

    def holds(self, row) -> bool:
        """Whether the claim still holds `row`, as far as this ledger knows."""
        return row.id in self.owned

    def _write(self, pending, mark) -> bool:
        """A database error (a killed backend, a restart, a failover) is retried on a fresh
        connection, backing off, until the database answers again or the claim's lease has
        gone by: the mails did leave, and their outcome written late still keeps them from
        being sent a second time. SIGTERM ends the waiting (the error is raised)."""
        deadline = time.monotonic() + self.lease.total_seconds()
        delay, attempts = 0.1, 0
        while True:
            try:
                ours = self._commit(pending, mark)
            except (pw.OperationalError, pw.InterfaceError) as exc:
                attempts += 1
                if time.monotonic() + delay > deadline or self.stop():
                    raise
                if attempts == 1:
                    self.host.log.warning("mail queue: recording outcomes of claim %s failed (%s: %s); "
                                          "reconnecting until the database answers", self.token,
                                          type(exc).__name__, str(exc).strip()[:200])
                try:
                    self.host.db.close()
                except pw.PeeweeException:
                    pass  # a connection already gone: the next statement opens a new one
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if attempts:
                self.host.log.info("mail queue: outcomes of claim %s recorded after %s failed attempt(s)",
                                   self.token, attempts)
            return ours

    def _commit(self, pending, mark) -> bool:
        if mark is not None and mark.id not in self.owned:
            if pending:
                self._commit(pending, None)
            return False
        host, token = self.host, self.token
        now = host.clock.now()
        ours = True
        self.owned.difference_update([r[0].id for r in pending.sent], [r[0].id for r in pending.failed],
                                     [r.id for r in pending.released], [r[0].id for r in pending.deferred])
        renew = time.monotonic() - self.renewed_at > self.lease.total_seconds() / 3
        if _one_sent(pending) and not renew:
            # The common case in one statement, one commit: this mail sent, the next one
            # marked in flight (see `_sent_and_mark`).
            sent_info, ours = self._sent_and_mark(pending, now, mark)
            failed_info = []
        else:
            with host.transaction():
                sent_info, failed_info = write(host, pending, token) if pending else ([], [])
                if renew:
                    held = M.update(lease_until=now + self.lease).where(M.lease_owner == token).execute()
                    if held < len(self.owned):  # another worker took some over: forget them
                        self.owned = {i for (i,) in M.select(M.id).where(M.lease_owner == token).tuples()}
                if mark is not None:
                    ours = run_prepared(host.db, "mark", lambda at, i, t: M.update(sending_since=at).where(
                        (M.id == i) & (M.lease_owner == t)), now, mark.id, token).rowcount == 1
            if renew:
                self.renewed_at = time.monotonic()
        self.marked_at = time.monotonic()
        if mark is not None and not ours:
            self.owned.discard(mark.id)
        log_written(host, sent_info, failed_info)
        self.sent_info += sent_info
        self.failed_info += failed_info
        return ours

    def _sent_and_mark(self, pending, now, mark) -> tuple[list, bool]:
        """One UPDATE, one commit: the sent mail becomes `sent` (still under the claim token:
        `finish` completes it with the batch, set-based) and `mark` gets its in-flight time
        if the claim still holds it. Returns (sent info, whether `mark` is ours). A late
        answer for a mail put aside meanwhile takes the general path (`write`)."""
        row, name, reply = pending.sent[0]
        next_id = mark.id if mark is not None else row.id
        applied = {r[0] for r in run_prepared(self.host.db, "sent-and-mark", _sent_and_mark_statement,
                                               now, row.id, next_id, self.token, name).fetchall()}
        info = [dict(info_of(row), server=name, reply=reply, deleted=row.auto_delete)]
        if row.id not in applied:
            with self.host.transaction():
                info, _ = write(self.host, pending, self.token)
        return info, mark is None or mark.id in applied

    def still_ours(self, row) -> bool:
        """Right before the data goes out: after a long pause since the mark (a stopped
        process, a slow server), look again in the database."""
        if time.monotonic() - self.marked_at < self.lease.total_seconds() / 3:
            return True
        now = self.host.clock.now()
        with self.host.transaction():
            ours = (M.update(sending_since=now, lease_until=now + self.lease)
                    .where((M.id == row.id) & (M.lease_owner == self.token)).execute()) == 1
        if not ours:
            self.owned.discard(row.id)
        return ours

    def counts(self) -> collections.Counter:
        c = collections.Counter(sent=len(self.sent_info))
        for info in self.failed_info:
            c["failed" if info["permanent"] else "retry"] += 1
        return c


def _one_sent(p) -> bool:
    return len(p.sent) == 1 and not p.failed and not p.released and not p.deferred


def _sent_and_mark_statement(at, sent_id, marked_id, token, server):
    this = M.id == sent_id
    return (M.update({M.state: pw.Case(None, [(this, "sent")], M.state),
                      M.server: pw.Case(None, [(this, server)], M.server),
                      M.sending_since: pw.Case(None, [(this, None)], at)})
            .where(M.id.in_([sent_id, marked_id]) & (M.lease_owner == token))
            .returning(M.id))
