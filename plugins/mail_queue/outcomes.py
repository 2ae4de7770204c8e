"""Recording what sending did, as it happens: sent, failed for good, to retry with backoff,
in doubt ("may have been delivered"), or put back untouched.

A `Ledger` writes each mail's outcome in a short transaction right after the server's
answer (overlapping the next mail's first round trip), so a crash repeats at most the
mail in flight; the same transaction marks the next mail as in flight and re-checks that
the claim still holds it. The other plugins hear of the outcomes through
postroom_mail_sent / postroom_mail_failed once the batch is done.
"""
import collections
import datetime as dt
import random
import time

import peewee as pw

from postroom.core import scheduler
from postroom.core.clock import naive
from postroom.core.models import Notification

from .daily_limit import reset_at
from .models import OutgoingMail
from .settings import ACTION_CODE, chunks, lease

FAILED_VIA = "Mail delivery failed via SMTP server '{}'."
M, N = OutgoingMail, Notification


class Outcome:
    """Outcomes not yet written."""

    def __init__(self):
        self.sent = []          # (row, server name, reply)
        self.failed = []        # (row, failure_type, reason, permanent, in_doubt)
        self.released = []      # rows not attempted (connection lost before their turn, stop)
        # (row, until, reason, attempted): held back by pacing or a domain's back-off;
        # attempted when the server answered this very mail with "slow down"
        self.deferred = []

    def fail(self, row, ftype, reason, permanent, in_doubt=False):
        self.failed.append((row, ftype, reason, permanent, in_doubt))

    def defer(self, row, until, reason, attempted=False):
        self.deferred.append((row, until, reason, attempted))

    def __bool__(self):
        return bool(self.sent or self.failed or self.released or self.deferred)


def smtp_reason(server_name, exc, code=None, text=None) -> str:
    if code is not None:
        words = text.decode(errors="replace") if isinstance(text, bytes) else str(text or "")
        detail = f"{code} {words}".strip()
    else:
        detail = str(exc) or "no reply"
    return f"{FAILED_VIA.format(server_name)} {type(exc).__name__}: {detail}"


def backoff(host, attempts: int) -> dt.timedelta:
    """Exponential backoff with jitter, between mail_retry_min_minutes and _max_minutes."""
    low = host.config.getfloat("mail_retry_min_minutes", 5.0)
    high = host.config.getfloat("mail_retry_max_minutes", 60.0)
    base = min(high, low * 2 ** max(0, attempts - 1))
    return dt.timedelta(minutes=max(low, min(high, random.uniform(base / 2, base) if base > low else base)))


def _info(row) -> dict:
    return {"mail_id": row.id, "notification_id": row.notification_id, "message_id": row.message_id,
            "email_to": row.email_to, "ref": row.ref}


def _answered(token):
    """Rows this worker may still write an answer to: its own claim, or (a slow answer
    arriving after its lease was taken over and the mail put aside as in doubt) a mail
    nobody holds any more. The answer is the truth either way."""
    return (M.lease_owner == token) | (M.lease_owner.is_null() & (M.state == "outgoing"))


def write(host, outcome: Outcome, token: str) -> tuple[list, list]:
    """Write `outcome` inside the caller's transaction, statements per kind of outcome
    (never per mail); returns (sent infos, failed infos) for the hooks."""
    now = host.clock.now()
    sent_info, failed_info, retry_at = [], [], []
    groups = collections.defaultdict(list)
    for row, ftype, reason, permanent, in_doubt in outcome.failed:
        doubtful = row.doubtful + (1 if in_doubt else 0)
        if in_doubt and doubtful > 1:
            permanent = True
            reason += "; it was already retried once after an earlier attempt that may have delivered it, so it is not sent again"
        elif in_doubt and not permanent:
            reason += "; it will be retried once, later, with the same Message-Id (receivers de-duplicate on it)"
        if not permanent and row.expires_at is not None and now >= row.expires_at:
            permanent = True  # its lifetime ran out: this was the last attempt
            reason += f" (last attempt: the mail's lifetime ran out at {row.expires_at:%Y-%m-%d %H:%M} UTC)"
        attempts = row.attempts + (0 if ftype == "mail_limit" and permanent else 1)
        groups[(ftype, reason, permanent, attempts, doubtful)].append(row)
        failed_info.append(dict(_info(row), failure_type=ftype, failure_reason=reason,
                                permanent=permanent, attempts=attempts))
    for (ftype, reason, permanent, attempts, doubtful), rows in groups.items():
        values = {"failure_type": ftype, "failure_reason": reason, "attempts": attempts,
                  "doubtful": doubtful, "updated_at": now, "lease_owner": None, "lease_until": None,
                  "sending_since": None}
        if permanent:
            values.update(state="exception", next_attempt_at=None)
        else:
            values["next_attempt_at"] = now + backoff(host, attempts)
            retry_at.append(values["next_attempt_at"])
        for chunk in chunks(rows):
            M.update(**values).where(M.id.in_([r.id for r in chunk]) & _answered(token)).execute()
            nids = [r.notification_id for r in chunk if r.notification_id]
            if permanent and nids:
                N.update(status="exception", failure_type=ftype, failure_reason=reason,
                         updated_at=now).where(N.id.in_(nids)).execute()
    for chunk in chunks(outcome.released):
        (M.update(lease_owner=None, lease_until=None, sending_since=None)
         .where(M.id.in_([r.id for r in chunk]) & (M.lease_owner == token)).execute())
    # Deferred mails wait, still outgoing and not failed, the reason saying why (queue
    # list shows it); only the one the server answered counts an attempt.
    waiting = collections.defaultdict(list)
    for row, until, reason, attempted in outcome.deferred:
        waiting[(until, reason, attempted)].append(row)
    for (until, reason, attempted), rows in waiting.items():
        retry_at.append(until)
        values = {"next_attempt_at": until, "failure_reason": reason, "updated_at": now,
                  "lease_owner": None, "lease_until": None, "sending_since": None}
        if attempted:
            values["attempts"] = M.attempts + 1
        for chunk in chunks(rows):
            M.update(**values).where(M.id.in_([r.id for r in chunk]) & _answered(token)).execute()
    if outcome.sent:
        for chunk in chunks(outcome.sent):
            nids = [r.notification_id for r, _, _ in chunk if r.notification_id]
            if nids:
                (N.update(status="sent", failure_type=None, failure_reason=None, updated_at=now)
                 .where(N.id.in_(nids)).execute())
            gone = [r.id for r, _, _ in chunk if r.auto_delete]
            if gone:
                M.delete().where(M.id.in_(gone) & _answered(token)).execute()
            kept = collections.defaultdict(list)
            for r, name, _ in chunk:
                if not r.auto_delete:
                    kept[name].append(r.id)
            for name, ids in kept.items():
                M.update(state="sent", sent_at=now, updated_at=now, attempts=M.attempts + 1,
                         failure_type=None, failure_reason=None, next_attempt_at=None,
                         server=name, lease_owner=None, lease_until=None, sending_since=None
                         ).where(M.id.in_(ids) & _answered(token)).execute()
        sent_info = [dict(_info(r), server=name, reply=reply, deleted=r.auto_delete)
                     for r, name, reply in outcome.sent]
    if retry_at:
        scheduler.trigger(host, ACTION_CODE, min(retry_at))
    if any(ftype == "mail_limit" for ftype, *_ in groups):
        # The count resets at midnight UTC: run then, to send these again (requeue_after_reset).
        scheduler.trigger(host, ACTION_CODE, reset_at(now) + dt.timedelta(seconds=1))
    return sent_info, failed_info


def finish(host, where) -> list[dict]:
    """Complete sent mails still under a claim (`where`: a claim token's, or those a dead
    worker left): their notifications become sent, auto_delete ones are deleted, the
    others lose their claim. Set-based; returns their infos (for the hooks)."""
    now = host.clock.now()
    cond = (M.state == "sent") & M.lease_owner.is_null(False) & where
    with host.transaction():
        rows = list(M.select(M.id, M.notification_id, M.message_id, M.email_to, M.ref, M.auto_delete)
                    .where(cond).tuples())
        if not rows:
            return []
        (N.update(status="sent", failure_type=None, failure_reason=None, updated_at=now)
         .where(N.id.in_(M.select(M.notification_id).where(cond & M.notification_id.is_null(False))))
         .execute())
        M.delete().where(cond & M.auto_delete).execute()
        M.update(lease_owner=None, lease_until=None, sent_at=now, updated_at=now, attempts=M.attempts + 1,
                 failure_type=None, failure_reason=None, next_attempt_at=None).where(cond).execute()
    return [{"mail_id": i, "notification_id": n, "message_id": mid, "email_to": to, "ref": ref}
            for i, n, mid, to, ref, _ in rows]


def log_written(host, sent_info, failed_info) -> None:
    """One line per mail, each with its id and Message-Id (what `zgrep` follows)."""
    for info in sent_info:
        host.log.info("mail %s sent to %s via %s msgid=%s notification=%s ref=%s reply=%s%s",
                      info["mail_id"], info["email_to"], info["server"], info["message_id"],
                      info["notification_id"], info["ref"], info["reply"],
                      "; auto_delete: removed from the queue with its batch" if info["deleted"] else "")
    for info in failed_info:
        host.log.warning("mail %s to %s msgid=%s failed (%s, %s): %s", info["mail_id"], info["email_to"],
                         info["message_id"], info["failure_type"],
                         "permanent" if info["permanent"] else f"retry {info['attempts']}",
                         info["failure_reason"])


def announce(host, sent_info, failed_info) -> None:
    """Tell the other plugins (after commit, outside any transaction)."""
    if sent_info:
        host.hook.postroom_mail_sent(host=host, mails=[_hook_info(i) for i in sent_info])
    if failed_info:
        host.hook.postroom_mail_failed(host=host, mails=[
            dict(_hook_info(i), failure_type=i["failure_type"], failure_reason=i["failure_reason"],
                 permanent=i["permanent"]) for i in failed_info])


def _hook_info(info) -> dict:
    return {k: info[k] for k in ("mail_id", "notification_id", "message_id", "email_to", "ref")}


_PREPARED: dict = {}


def _run_prepared(host, key, build, *values):
    """Run the statement `build(*values)` with SQL text peewee renders once per engine: the
    per-mail statements are a third of a millisecond of query building each otherwise,
    as much as the whole rest of a mail's work. Returns the cursor."""
    cache_key = (key, host.db.engine)
    entry = _PREPARED.get(cache_key)
    if entry is None:
        sentinels = [_sentinel(v, k) for k, v in enumerate(values)]
        sql, params = build(*sentinels).sql()
        plain = [naive(x) if isinstance(x, dt.datetime) else x for x in sentinels]
        order = []
        for param in params:
            matches = [k for k, x in enumerate(plain) if type(x) is type(param) and x == param]
            order.append(matches[0] if matches else ("const", param))
        entry = _PREPARED[cache_key] = (sql, order)
    sql, order = entry
    args = [values[o] if not isinstance(o, tuple) else o[1] for o in order]
    args = [naive(a) if isinstance(a, dt.datetime) else a for a in args]
    return host.db.execute_sql(sql, args)


def _sentinel(value, k):
    if isinstance(value, dt.datetime):
        return dt.datetime(1901, 1, 1, 0, 0, 0, 1000 + k, tzinfo=dt.timezone.utc)
    if isinstance(value, int):
        return -7_000_000 - k
    return f"\x00sentinel{k}"


class Ledger:
    """The durable record of one claim's progress (one per server conversation).

    `flush(mark=row)` writes what is pending and, in the same transaction, marks `row` in
    flight and checks that the claim still holds it; every third of a lease it also
    renews the claim's lease. Outcomes are announced by `announce_all()` at the end."""

    def __init__(self, host, token: str, claimed_ids):
        self.host, self.token = host, token
        self.pending = Outcome()
        self.sent_info, self.failed_info = [], []
        self.owned = set(claimed_ids)
        self.lease = lease(host)
        self.renewed_at = self.marked_at = time.monotonic()

    def flush(self, mark=None) -> bool:
        """Write the pending outcomes (and mark `mark` in flight); returns whether `mark`
        is still ours (True without one). A database error is retried once on a fresh
        connection (a killed backend, a failover): the mails did leave."""
        try:
            return self._flush(mark)
        except (pw.OperationalError, pw.InterfaceError) as exc:
            self.host.log.warning("mail queue: recording outcomes of claim %s failed (%s: %s); "
                                  "reconnecting once", self.token, type(exc).__name__, str(exc).strip()[:200])
            self.host.db.close()
            return self._flush(mark)

    def _flush(self, mark) -> bool:
        if mark is not None and mark.id not in self.owned:
            if self.pending:
                self._flush(None)
            return False
        host, token = self.host, self.token
        now = host.clock.now()
        ours = True
        self.owned -= {r.id for r, *_ in self.pending.sent + self.pending.failed}
        self.owned -= {r.id for r in self.pending.released}
        self.owned -= {r[0].id for r in self.pending.deferred}
        renew = time.monotonic() - self.renewed_at > self.lease.total_seconds() / 3
        if self._one_sent() and not renew:
            # The common case in one statement, one commit: this mail sent, the next one
            # marked in flight (see `_sent_and_mark`).
            sent_info, ours = self._sent_and_mark(now, mark)
            self.marked_at = time.monotonic()
            self.pending = Outcome()
            if mark is not None and not ours:
                self.owned.discard(mark.id)
            log_written(host, sent_info, [])
            self.sent_info += sent_info
            return ours
        with host.transaction():
            sent_info, failed_info = write(host, self.pending, token) if self.pending else ([], [])
            if renew:
                held = M.update(lease_until=now + self.lease).where(M.lease_owner == token).execute()
                if held < len(self.owned):  # another worker took some over: forget them
                    self.owned = {i for (i,) in M.select(M.id).where(M.lease_owner == token).tuples()}
            if mark is not None:
                ours = _run_prepared(host, "mark", lambda at, i, t: M.update(sending_since=at).where(
                    (M.id == i) & (M.lease_owner == t)), now, mark.id, token).rowcount == 1
        if renew:
            self.renewed_at = time.monotonic()
        self.marked_at = time.monotonic()
        self.pending = Outcome()
        if mark is not None and not ours:
            self.owned.discard(mark.id)
        log_written(host, sent_info, failed_info)
        self.sent_info += sent_info
        self.failed_info += failed_info
        return ours

    def _one_sent(self) -> bool:
        p = self.pending
        return len(p.sent) == 1 and not p.failed and not p.released and not p.deferred

    def _sent_and_mark(self, now, mark) -> tuple[list, bool]:
        """One UPDATE, one commit: the sent mail becomes `sent` (still under the claim token:
        `finish` completes it with the batch, set-based) and `mark` gets its in-flight time
        if the claim still holds it. Returns (sent info, whether `mark` is ours). A late
        answer for a mail put aside meanwhile takes the general path (`write`)."""
        row, name, reply = self.pending.sent[0]
        next_id = mark.id if mark is not None else row.id

        def build(at, sent_id, marked_id, token, server):
            this = M.id == sent_id
            return (M.update({M.state: pw.Case(None, [(this, "sent")], M.state),
                              M.server: pw.Case(None, [(this, server)], M.server),
                              M.sending_since: pw.Case(None, [(this, None)], at)})
                    .where(M.id.in_([sent_id, marked_id]) & (M.lease_owner == token))
                    .returning(M.id))
        applied = {r[0] for r in _run_prepared(self.host, "sent-and-mark", build, now, row.id, next_id,
                                               self.token, name).fetchall()}
        info = [dict(_info(row), server=name, reply=reply, deleted=row.auto_delete)]
        if row.id not in applied:
            with self.host.transaction():
                info, _ = write(self.host, self.pending, self.token)
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
