"""The ledger of one claim's progress: each mail's outcome made durable right after the
server's answer (while the server reads the next mail's commands), so a crash repeats at
most the mail in flight. A sent mail, the common case, is appended to the outcome journal
(`journal.py`) with the next mail's in-flight mark, in one statement, while the claim was
renewed less than a third of a lease ago (so no other worker can hold them); the journal
is applied to the mails set-based at the end of the batch. Every third of a lease the
ledger renews the claim and reads back what it still holds.

On PostgreSQL that append goes ahead (`ahead`, `journal_ahead`): it is sent before the next
mail is composed and confirmed right before that mail's data (`confirmed`), so its commit
overlaps the next mail's work. The invariant stays: at most one mail whose data went out
has an outcome not yet durable, and a mail's in-flight mark is durable before its data."""
import collections
import time

import peewee as pw

from . import journal
from .journal_ahead import Unconfirmed
from .models import OutgoingMail
from .outcomes import Outcome, info_of, log_written, write
from .settings import lease

M = OutgoingMail
# A claim of fewer mails appends synchronously: an urgent mail or two would pay more for
# opening the second connection (about 2 ms) than the overlap saves them.
AHEAD_FROM = 8


class Ledger:
    """The durable record of one claim's progress (one per server conversation).

    `flush(mark=row)` writes what is pending and, in the same commit, marks `row` in flight
    and checks that the claim still holds it; every third of a lease it also renews the
    claim's lease. `apply()` writes what the journal holds to the mails (the end of the
    batch; a long batch also every `journal.APPLY_EVERY` seconds). The sending code
    announces the outcomes (`outcomes.announce`) once the batch is done."""

    def __init__(self, host, token: str, claimed_ids, stop=None, ahead=None):
        self.host, self.token = host, token
        self.stop = stop or (lambda: False)  # SIGTERM: stop waiting for the database
        self.pending = Outcome()
        self.sent_info, self.failed_info = [], []
        self.owned = set(claimed_ids)
        self.lease = lease(host)
        self.renewed_at = self.marked_at = self.applied_at = time.monotonic()
        self.journaled = []        # (row, server name, reply) sent, in the journal, not applied
        self.journal_ids = set()   # mails with journal rows of this ledger (sent or in flight)
        # `journal_ahead.Ahead` (PostgreSQL), for a claim big enough for it to pay.
        self.ahead_conn = ahead if len(self.owned) >= AHEAD_FROM else None
        self.flying = None         # (pending, mark) whose append went ahead, not yet confirmed

    def flush(self, mark=None) -> bool:
        """Write the pending outcomes (and mark `mark` in flight); returns whether `mark`
        is still ours (True without one)."""
        if mark is not None and self.flying is not None and self.flying[1] is mark and not self.pending:
            return True  # marked by the append sent ahead, which `confirmed` waits for
        self._settle()
        pending, self.pending = self.pending, Outcome()
        ours = self._retrying(lambda: self._commit(pending, mark))
        if self.journaled and time.monotonic() - self.applied_at > journal.APPLY_EVERY:
            self.apply()
        return ours

    def apply(self, others=(), final: bool = False) -> None:
        """Write the journaled sent mails of the claim to mail_queue_mail, set-based, and
        delete their journal rows, in one transaction (`journal.apply_claim`). `final`: the
        claim's work is done (this ledger's and `others'`, the claim's other ledgers): every
        journal row of the claim goes; mid-batch the marks of mails in flight stay."""
        self._settle()
        ledgers = [self, *others]
        sent = [s for ledger in ledgers for s in ledger.journaled]
        if not sent and not (final and any(ledger.journal_ids for ledger in ledgers)):
            return
        notified = any(row.notification_id for row, _, _ in sent)
        deleted = any(row.auto_delete for row, _, _ in sent)
        servers = {name for _, name, _ in sent}
        kept = {name for row, name, _ in sent if not row.auto_delete}

        def commit():
            with self.host.transaction():
                applied = journal.apply_claim(self.host, self.token, self.host.clock.now(), servers,
                                              notified, deleted, kept, final)
                if applied < len({row.id for row, _, _ in sent}):
                    # A mail whose claim was lost while its answer was awaited (another worker
                    # took it over and put it aside as in doubt): its answer is the truth.
                    late = Outcome()
                    late.sent = sent
                    write(self.host, late, self.token)
        self._retrying(commit)
        for ledger in ledgers:
            ledger.journaled = []
            if final:
                ledger.journal_ids = set()
        self.applied_at = time.monotonic()

    def ahead(self, mark) -> None:
        """Before `mark` is composed: send the pending sent mail's append, with `mark`'s
        in-flight mark, now and without waiting (PostgreSQL, and only the common case: one
        mail sent, no renewal due, `mark` still ours); `confirmed(mark)` waits for it before
        the data. Otherwise nothing: `flush(mark=...)` writes them synchronously."""
        self._settle()
        if self.ahead_conn is None or not _one_sent(self.pending) or mark.id not in self.owned \
                or self._renew_due():
            return
        row, name, _ = self.pending.sent[0]
        if self.ahead_conn.start(self.token, self.host.clock.now(), row.id, name, mark.id):
            self.flying, self.pending = (self.pending, mark), Outcome()

    def confirmed(self, row) -> bool:
        """Right before `row`'s data: whether the append sent ahead committed (True when none
        went). When it did not, its sent mail has been written the synchronous way, and
        `row` must not go now: the caller abandons its transaction and puts it back."""
        return self._settle()

    def _settle(self) -> bool:
        """Wait for the append sent ahead, if any. False when it was not confirmed, after
        writing its sent mail synchronously (`_retrying`), without the mark: that mail is
        not sent now."""
        if self.flying is None:
            return True
        (pending, mark), self.flying = self.flying, None
        try:
            self.ahead_conn.confirm(self.lease.total_seconds() / 3)
        except Unconfirmed as exc:
            self.host.log.warning("mail queue: journal append of mail %s (claim %s) not confirmed (%s); "
                                  "writing it again, mail %s put back", pending.sent[0][0].id, self.token,
                                  exc, mark.id)
            self._retrying(lambda: self._commit(pending, None))
            return False
        self._journaled(pending, mark)
        return True

    def _renew_due(self) -> bool:
        return time.monotonic() - self.renewed_at > self.lease.total_seconds() / 3

    def holds(self, row) -> bool:
        """Whether the claim still holds `row`, as far as this ledger knows."""
        return row.id in self.owned

    def _retrying(self, commit):
        """Run `commit()` and return what it returns. A database error (a killed backend, a
        restart, a failover) is retried on a fresh connection, backing off, until the
        database answers again or the claim's lease has gone by: the mails did leave, and
        their outcome written late still keeps them from being sent a second time. SIGTERM ends the waiting (the error is raised)."""
        deadline = time.monotonic() + self.lease.total_seconds()
        delay, attempts = 0.1, 0
        while True:
            try:
                done = commit()
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
            return done

    def _commit(self, pending, mark) -> bool:
        if mark is not None and mark.id not in self.owned:
            if pending:
                self._commit(pending, None)
            return False
        host, token = self.host, self.token
        now = host.clock.now()
        renew = self._renew_due()
        if _one_sent(pending) and not renew:
            # The common case in one statement, one commit: this mail sent, the next one
            # marked in flight, in the journal. It reads nothing: the ledger holds `mark`,
            # and the claim was renewed (or taken) less than a third of a lease ago, so no
            # other worker can hold its mails.
            row, name, _ = pending.sent[0]
            journal.append(host.db, token, now, row.id, name, mark.id if mark is not None else None)
            self._journaled(pending, mark)
            return True
        ours = True
        self.owned.difference_update([r[0].id for r in pending.sent], [r[0].id for r in pending.failed],
                                     [r.id for r in pending.released], [r[0].id for r in pending.deferred])
        with host.transaction():
            sent_info, failed_info = write(host, pending, token) if pending else ([], [])
            if renew:
                M.update(lease_until=now + self.lease).where(M.lease_owner == token).execute()
                # What another worker took over (this lease ran out before the renewal)
                # is no longer ours: read it back, since the sent mails' journal INSERT
                # checks nothing and relies on this.
                self.owned &= {i for (i,) in M.select(M.id).where(M.lease_owner == token).tuples()}
            if mark is not None:
                ours = journal.mark(host.db, token, now, mark.id)
                if ours:
                    self.journal_ids.add(mark.id)
        if renew:
            self.renewed_at = time.monotonic()
        self.marked_at = time.monotonic()
        if mark is not None and not ours:
            self.owned.discard(mark.id)
        log_written(host, sent_info, failed_info)
        self.sent_info += sent_info
        self.failed_info += failed_info
        return ours

    def _journaled(self, pending, mark) -> None:
        """What the ledger keeps once a sent mail (and `mark`, in flight) is in the journal:
        it is applied with the batch, set-based, and announced after it."""
        row, name, reply = pending.sent[0]
        self.owned.discard(row.id)
        self.journal_ids.add(row.id)
        if mark is not None:
            self.journal_ids.add(mark.id)
        self.journaled.append(pending.sent[0])
        self.marked_at = time.monotonic()
        sent_info = [dict(info_of(row), server=name, reply=reply, deleted=row.auto_delete)]
        log_written(self.host, sent_info, [])
        self.sent_info += sent_info

    def still_ours(self, row) -> bool:
        """Right before the data goes out: after a long pause since the mark (a stopped
        process, a slow server), look again in the database."""
        self._settle()
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
