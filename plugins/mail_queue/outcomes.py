"""Recording what sending did, as it happens: sent, failed for good, to retry with backoff,
in doubt ("may have been delivered"), or put back untouched.

`write` turns a batch of outcomes into a few set-based statements; `ledger.Ledger` calls it
right after each server answer (or, for a mail sent, appends it to the outcome journal and
calls it for the batch), so a crash repeats at most the mail in flight. `finish` completes
sent mails still under a dead worker's claim. The other
plugins hear of the outcomes through postroom_mail_sent / postroom_mail_failed once the
batch is done (`announce`).
"""
import collections
import datetime as dt
import random

from postroom.core import scheduler
from postroom.core.models import Notification

from . import journal
from .daily_limit import reset_at
from .models import OutgoingMail
from .settings import ACTION_CODE, chunks

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


def info_of(row) -> dict:
    """What the log lines and the hooks say about a mail."""
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
        failed_info.append(dict(info_of(row), failure_type=ftype, failure_reason=reason,
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
        sent_info = [dict(info_of(r), server=name, reply=reply, deleted=r.auto_delete)
                     for r, name, reply in outcome.sent]
    if retry_at:
        scheduler.trigger(host, ACTION_CODE, min(retry_at))
    if any(ftype == "mail_limit" for ftype, *_ in groups):
        # The count resets at midnight UTC: run then, to send these again (requeue_after_reset).
        scheduler.trigger(host, ACTION_CODE, reset_at(now) + dt.timedelta(seconds=1))
    return sent_info, failed_info


def finish(host, where, infos: bool = True, dead_before=None) -> list[dict]:
    """Complete sent mails still under a claim (`where`: a claim token's, or those a dead
    worker left): their notifications become sent, auto_delete ones are deleted, the
    others lose their claim. With `dead_before`, what claims whose lease ended before then
    only journaled is applied first (`journal.apply_expired`), in the same transaction.
    Set-based; returns their infos (for the hooks) unless the caller has them already
    (`infos=False`: nothing is read back)."""
    now = host.clock.now()
    cond = (M.state == "sent") & M.lease_owner.is_null(False) & where
    rows = []
    with host.transaction():
        if dead_before is not None:
            journal.apply_expired(host, dead_before)
        if infos:
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
