"""Recording what a delivery did: sent, failed for good, to retry with backoff, or put back.

One transaction per delivery, statements per kind of outcome (never per mail), then the
other plugins hear of it through postroom_mail_sent / postroom_mail_failed after commit.
"""
import collections
import datetime as dt
import random

from postroom.core import scheduler
from postroom.core.models import Notification

from .metrics import count_outcomes
from .models import OutgoingMail
from .settings import ACTION_CODE, chunks

FAILED_VIA = "Mail delivery failed via SMTP server '{}'."


class Outcome:
    """What happened to each mail of a delivery, recorded together afterwards."""

    def __init__(self):
        self.sent = []          # (row, server name)
        self.failed = []        # (row, failure_type, reason, permanent)
        self.released = []      # rows not attempted (connection lost before their turn)
        # (row, until, reason, attempted): held back by pacing or a domain's back-off;
        # attempted when the server answered this very mail with "slow down"
        self.deferred = []

    def fail(self, row, ftype, reason, permanent):
        self.failed.append((row, ftype, reason, permanent))

    def defer(self, row, until, reason, attempted=False):
        self.deferred.append((row, until, reason, attempted))


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


def record(host, outcome: Outcome, token: str) -> None:
    """Write every outcome in one transaction (statements per kind of outcome, not per mail),
    then fire postroom_mail_sent / postroom_mail_failed after the commit.

    Failed and put-back mails are written first and leave the claim; what is still under
    the claim token after that is exactly what was sent."""
    now = host.clock.now()
    M, N = OutgoingMail, Notification
    sent_info, failed_info = [], []
    retry_at = []
    with host.transaction():
        sent_info = [_info(row) for row, _ in outcome.sent]
        groups = collections.defaultdict(list)
        for row, ftype, reason, permanent in outcome.failed:
            if not permanent and row.expires_at is not None and now >= row.expires_at:
                permanent = True  # its lifetime ran out: the last reason stands
            attempts = row.attempts + (0 if ftype == "mail_limit" and permanent else 1)
            groups[(ftype, reason, permanent, attempts)].append(row)
            failed_info.append(dict(_info(row), failure_type=ftype, failure_reason=reason,
                                    permanent=permanent))
        for (ftype, reason, permanent, attempts), rows in groups.items():
            values = {"failure_type": ftype, "failure_reason": reason, "attempts": attempts,
                      "updated_at": now, "lease_owner": None, "lease_until": None}
            if permanent:
                values.update(state="exception", next_attempt_at=None)
            else:
                values["next_attempt_at"] = now + backoff(host, attempts)
                retry_at.append(values["next_attempt_at"])
            for chunk in chunks(rows):
                M.update(**values).where(M.id.in_([r.id for r in chunk]) & (M.lease_owner == token)).execute()
                nids = [r.notification_id for r in chunk if r.notification_id]
                if permanent and nids:
                    N.update(status="exception", failure_type=ftype, failure_reason=reason,
                             updated_at=now).where(N.id.in_(nids)).execute()
        for chunk in chunks(outcome.released):
            (M.update(lease_owner=None, lease_until=None)
             .where(M.id.in_([r.id for r in chunk]) & (M.lease_owner == token)).execute())
        # Deferred mails wait, still outgoing and not failed, the reason saying why (queue
        # list shows it); only the one the server answered counts an attempt.
        waiting = collections.defaultdict(list)
        for row, until, reason, attempted in outcome.deferred:
            waiting[(until, reason, attempted)].append(row)
        for (until, reason, attempted), rows in waiting.items():
            retry_at.append(until)
            values = {"next_attempt_at": until, "failure_reason": reason, "updated_at": now,
                      "lease_owner": None, "lease_until": None}
            if attempted:
                values["attempts"] = M.attempts + 1
            for chunk in chunks(rows):
                M.update(**values).where(M.id.in_([r.id for r in chunk]) & (M.lease_owner == token)).execute()
        if outcome.sent:
            mine = M.lease_owner == token
            (N.update(status="sent", failure_type=None, failure_reason=None, updated_at=now)
             .where(N.id.in_(M.select(M.notification_id).where(mine & M.notification_id.is_null(False))))
             .execute())
            M.delete().where(mine & M.auto_delete).execute()
            servers_used = {name for _, name in outcome.sent}
            for name in servers_used:
                where = mine if len(servers_used) == 1 else mine & M.id.in_(
                    [r.id for r, n in outcome.sent if n == name])
                M.update(state="sent", sent_at=now, updated_at=now, attempts=M.attempts + 1,
                         failure_type=None, failure_reason=None, next_attempt_at=None,
                         server=name, lease_owner=None, lease_until=None).where(where).execute()
        if retry_at:
            scheduler.trigger(host, ACTION_CODE, min(retry_at))
        count_outcomes(len(sent_info), failed_info)
    for info in failed_info:
        host.log.warning("mail %s to %s failed (%s, %s): %s", info["mail_id"], info["email_to"],
                         info["failure_type"], "permanent" if info["permanent"] else "will retry",
                         info["failure_reason"])
    if sent_info:
        host.hook.postroom_mail_sent(host=host, mails=sent_info)
    if failed_info:
        host.hook.postroom_mail_failed(host=host, mails=failed_info)
