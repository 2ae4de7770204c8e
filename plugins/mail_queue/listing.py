"""What the queue shows of a mail, on the command line (`queue list`, `queue show`,
`queue send-now`) and in the console (the queue table, a mail's page): its fields as a row,
and why it waits when it waits, and a mail sent but not yet applied from the outcome journal
as sent."""
from . import claims, journal
from .models import OutgoingMail


def mail_row(m: OutgoingMail) -> dict:
    """One mail as the listings show it."""
    return {"id": m.id, "state": m.state, "failure_type": m.failure_type,
            "failure_reason": m.failure_reason, "email_to": m.email_to, "email_from": m.email_from,
            "subject": m.subject, "message_id": m.message_id, "attempts": m.attempts,
            "next_attempt_at": m.next_attempt_at, "scheduled_at": m.scheduled_at,
            "expires_at": m.expires_at, "bulk": m.bulk, "auto_delete": m.auto_delete,
            "server": m.server, "ref": m.ref, "notification_id": m.notification_id,
            "chatter_message_id": m.chatter_message_id,
            "created_at": m.created_at, "sent_at": m.sent_at, "updated_at": m.updated_at,
            "lease_owner": m.lease_owner, "lease_until": m.lease_until}


def is_waiting(reason) -> bool:
    """Whether a mail's reason says why it waits (pacing, a back-off, a concurrency limit)
    rather than why it failed: outgoing mail held back is not a failure."""
    return bool(reason) and reason.startswith("waiting:")


def with_waits(host, rows, due=True) -> list[dict]:
    """`rows` (dicts with id, state, email_to, scheduled_at, next_attempt_at, lease_until and
    failure_reason), where the mails held back by mail_domain_concurrency say so in
    `failure_reason` (nothing is written on them: they wait untouched); an earlier failure
    stays readable after it. The reasons of the rate window and of a back-off are already
    stored there (`pacing`). A mail whose worker journaled it as sent shows as sent, with
    its server and time, though its row still says outgoing (`journal.overlay`). Two
    queries whatever the number of rows."""
    journal.overlay(rows)
    by_id = {r["id"]: r for r in rows}
    for mail_id, why in claims.held_back_reasons(host, rows, due).items():
        row = by_id[mail_id]
        old = row["failure_reason"]
        row["failure_reason"] = why + (f" (last failure: {old})" if old and not is_waiting(old) else "")
    return rows
