"""Putting mail in the queue: the service's `enqueue`, chatter notifications, and the
operator's actions on queued mails (retry, cancel, send now, resend, ignore)."""
import datetime as dt
import email.utils

import peewee as pw

from postroom.core import chatter, emails, records, scheduler
from postroom.core.db import is_postgres
from postroom.core.errors import Conflict, InvalidInput, NotFound
from postroom.core.models import Message, Notification, Partner

from . import compose
from .models import OutgoingMail

ACTION_CODE = "mail_queue.process"
ACTION_NAME = "Mail: Email Queue Manager"
CHUNK = 500


def lifetime(host) -> dt.timedelta:
    return dt.timedelta(days=host.config.getfloat("mail_lifetime_days", 5.0))


def default_from(host) -> str:
    """config `mail_from`, else the admin partner's real address, else notifications@domain."""
    configured = host.config.get("mail_from")
    if configured:
        return configured
    admin = records.admin_partner(host)
    if admin is not None and admin.email and not records.admin_has_temporary_email(host):
        return compose.encode_address(admin.name, admin.email) if admin.name.isascii() else admin.email
    return f"notifications@{host.config.primary_domain}"


def catchall(host) -> str:
    return f"{host.config.get('catchall')}@{host.config.primary_domain}"


def reply_to_for(host, record) -> str:
    """The record's alias (a plugin may answer `postroom_reply_to`), else the catchall."""
    if record is not None:
        alias = host.hook.postroom_reply_to(host=host, record=record)
        if alias:
            return alias
    return catchall(host)


def _row(host, mail: dict, now, from_default, expires_default) -> dict:
    if not isinstance(mail, dict):
        raise InvalidInput("each mail must be a dict")
    unknown = set(mail) - {"email_to", "subject", "body_html", "email_from", "headers", "ref",
                           "scheduled_at", "message_id", "notification_id", "auto_delete", "bulk",
                           "reply_to", "message"}
    if unknown:
        raise InvalidInput(f"unknown mail keys: {', '.join(sorted(unknown))}")
    to_text = mail.get("email_to")
    name, address = None, None
    if to_text:
        emails.check_header_text("recipient", to_text)
        if len(email.utils.getaddresses([to_text])) > 1:
            raise InvalidInput(f"one recipient per mail, not {to_text!r} (enqueue one mail each)")
        name, address = compose.parse_address(to_text)
        address = address or to_text
    subject = mail.get("subject") or ""
    emails.check_header_text("subject", subject)
    email_from = mail.get("email_from") or from_default
    emails.check_header_text("sender", email_from)
    ref = mail.get("ref")
    if ref is not None and (not str(ref).isalnum() or not str(ref).isascii()):
        raise InvalidInput(f"ref must be letters and digits (it goes into the bounce address), not {ref!r}")
    scheduled = mail.get("scheduled_at")
    if scheduled is not None and (not isinstance(scheduled, dt.datetime) or scheduled.tzinfo is None):
        raise InvalidInput("scheduled_at must be an aware datetime")
    message_id = mail.get("message_id") or chatter.make_message_id(host)
    emails.check_header_text("Message-Id", message_id)
    if not (message_id.startswith("<") and message_id.endswith(">") and "@" in message_id):
        raise InvalidInput(f"Message-Id must look like <left@right>, not {message_id!r}")
    reply_to = mail.get("reply_to") or catchall(host)
    emails.check_header_text("Reply-To", reply_to)
    start = max(now, scheduled) if scheduled else now
    return {"email_to": address, "recipient_name": name or None, "subject": subject,
            "body_html": mail.get("body_html") or "", "email_from": email_from,
            "headers": compose.check_headers(mail.get("headers")) or None, "ref": ref,
            "scheduled_at": scheduled, "message_id": message_id,
            "notification_id": mail.get("notification_id"), "message": mail.get("message"),
            "auto_delete": bool(mail.get("auto_delete", True)), "bulk": bool(mail.get("bulk", True)),
            "reply_to": reply_to, "state": "outgoing", "attempts": 0, "created_at": now,
            "updated_at": now, "expires_at": start + expires_default}


def insert_rows(host, rows: list[dict]) -> list[int]:
    """Multi-row INSERTs in chunks; returns the new ids in order (inside a transaction)."""
    ids = []
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        if is_postgres(host.db):
            ids.extend(r[0] for r in OutgoingMail.insert_many(chunk).returning(OutgoingMail.id).tuples().execute())
        else:
            # SQLite gives one statement's rows consecutive rowids, and the write lock is ours.
            last = OutgoingMail.insert_many(chunk).execute()
            ids.extend(range(last - len(chunk) + 1, last + 1))
    return ids


def enqueue(host, mails: list[dict]) -> list[int]:
    """Validate and insert mails set-based; urgent ones leave after commit. See MailService."""
    now = host.clock.now()
    from_default = default_from(host)
    life = lifetime(host)
    rows = [_row(host, m, now, from_default, life) for m in mails]
    if not rows:
        return []
    with host.transaction():
        ids = insert_rows(host, rows)
        scheduled = [r["scheduled_at"] for r in rows if r["scheduled_at"] and r["scheduled_at"] > now]
        for at in sorted(set(scheduled))[:20]:  # later ones: the regular runs pick them up
            scheduler.trigger(host, ACTION_CODE, at)
        urgent = [i for i, r in zip(ids, rows) if not r["bulk"] and not
                  (r["scheduled_at"] and r["scheduled_at"] > now)]
        if urgent:
            from . import sending
            host.after_commit(lambda: sending.send_ids(host, urgent), network=True)
    host.log.info("mail queue: %s mail(s) enqueued (%s urgent), ids %s..%s", len(ids),
                  len(urgent), ids[0], ids[-1])
    return ids


# --- chatter notifications ---------------------------------------------------------

def from_notifications(host, message: Message, where, bulk: bool) -> int:
    """INSERT … SELECT one mail per `ready` email notification of `message` matching
    `where`: one statement whatever the number of recipients."""
    now = host.clock.now()
    record = message.record
    parent = message.parent
    email_from = message.email_from or default_from(host)
    subject = message.subject or (f"Re: {record.name}" if record is not None else "")
    V = pw.Value
    conv = {"dt": OutgoingMail.created_at.db_value}
    query = (Notification.select(
        V(message.id), Notification.id, V(email_from), Partner.email, Partner.name,
        V(subject), V(message.body), V(message.message_id),
        V(parent.message_id if parent else None), V(parent.message_id if parent else None),
        V(reply_to_for(host, record)), V("outgoing"), V(bulk), V(True), V(0),
        V(now, converter=conv["dt"]), V(now, converter=conv["dt"]),
        V(now + lifetime(host), converter=conv["dt"]))
        .join(Partner, on=(Notification.partner == Partner.id))
        .where((Notification.message == message.id) & (Notification.notification_type == "email")
               & (Notification.status == "ready") & where))
    F = OutgoingMail
    return (F.insert_from(query, [F.message, F.notification_id, F.email_from, F.email_to,
                                  F.recipient_name, F.subject, F.body_html, F.message_id,
                                  F.in_reply_to, F.references, F.reply_to, F.state, F.bulk,
                                  F.auto_delete, F.attempts, F.created_at, F.updated_at,
                                  F.expires_at])
            .as_rowcount().execute())


def on_message_posted(host, message: Message, notified: int) -> None:
    """Turn the message's email notifications into mails (inside the posting transaction).

    Person-to-person posts (up to `mail_force_send_limit` recipients, default 50) leave right
    after commit; larger fan-outs go through the queue, which is asked to run now."""
    if not notified:
        return
    subject = message.subject or ""
    emails.check_header_text("subject", subject)
    force_limit = host.config.getint("mail_force_send_limit", 50)
    urgent = notified <= force_limit
    created = from_notifications(host, message, pw.Value(True), bulk=not urgent)
    if not created:
        return
    if urgent:
        from . import sending
        mid = message.id
        host.after_commit(lambda: sending.send_message_mails(host, mid), network=True)
    else:
        scheduler.trigger(host, ACTION_CODE, host.clock.now())


# --- operator actions --------------------------------------------------------------

def _ids(ids) -> list[int]:
    try:
        return sorted({int(i) for i in ids})
    except (TypeError, ValueError):
        raise InvalidInput("mail ids must be numbers") from None


def get_mail(host, mail_id) -> OutgoingMail:
    mail = OutgoingMail.get_or_none(OutgoingMail.id == _ids([mail_id])[0])
    if mail is None:
        raise NotFound(f"no outgoing mail with id {mail_id} (sent mails are deleted unless kept)")
    return mail


def _existing(ids, states) -> list[OutgoingMail]:
    found = list(OutgoingMail.select().where(OutgoingMail.id.in_(ids)))
    missing = sorted(set(ids) - {m.id for m in found})
    if missing:
        raise NotFound(f"no outgoing mail with id {', '.join(map(str, missing))}")
    wrong = [m for m in found if m.state not in states]
    if wrong:
        raise InvalidInput("; ".join(f"mail {m.id} is {m.state}" for m in wrong)
                           + f" (only {' or '.join(states)} mails qualify)")
    return found


def _notifications(mails, values) -> None:
    nids = [m.notification_id for m in mails if m.notification_id]
    for start in range(0, len(nids), CHUNK):
        Notification.update(**values).where(Notification.id.in_(nids[start:start + CHUNK])).execute()


def retry(host, ids=(), all_failed=False) -> list[int]:
    """exception (or canceled) → outgoing, due at the next run, with a fresh lifetime."""
    now = host.clock.now()
    with host.transaction():
        if all_failed:
            mails = list(OutgoingMail.select().where(OutgoingMail.state == "exception"))
        else:
            mails = _existing(_ids(ids), ("exception", "cancel"))
        ids = [m.id for m in mails]
        for start in range(0, len(ids), CHUNK):
            (OutgoingMail.update(state="outgoing", failure_type=None, failure_reason=None,
                                 next_attempt_at=None, scheduled_at=None, lease_owner=None,
                                 lease_until=None, updated_at=now, expires_at=now + lifetime(host))
             .where(OutgoingMail.id.in_(ids[start:start + CHUNK])).execute())
        _notifications(mails, {"status": "ready", "failure_type": None, "failure_reason": None,
                               "updated_at": now})
    host.log.info("mail queue: retry asked for mails %s", ids)
    return ids


def cancel(host, ids) -> list[int]:
    """outgoing or exception → cancel; the recipients' notifications become canceled."""
    now = host.clock.now()
    with host.transaction():
        mails = _existing(_ids(ids), ("outgoing", "exception"))
        busy = [m.id for m in mails if m.lease_until is not None and m.lease_until > now]
        if busy:
            raise Conflict(f"mail {', '.join(map(str, busy))} is being sent right now; "
                           f"nothing was canceled, try again in a moment")
        ids = [m.id for m in mails]
        OutgoingMail.update(state="cancel", updated_at=now).where(OutgoingMail.id.in_(ids)).execute()
        _notifications(mails, {"status": "canceled", "updated_at": now})
    host.log.info("mail queue: mails %s canceled", ids)
    return ids


def failed_notifications(message_ids):
    return (Notification.select(Notification, Partner).join(Partner)
            .where(Notification.message.in_(message_ids) & Notification.status.in_(chatter.FAILED)))


def ignore(host, message_ids) -> int:
    """"Ignore all": the messages' failed notifications become canceled (white envelope) and
    their failed mails are canceled."""
    now = host.clock.now()
    with host.transaction():
        notes = list(failed_notifications(message_ids))
        nids = [n.id for n in notes]
        for start in range(0, len(nids), CHUNK):
            chunk = nids[start:start + CHUNK]
            Notification.update(status="canceled", updated_at=now).where(Notification.id.in_(chunk)).execute()
            (OutgoingMail.update(state="cancel", updated_at=now)
             .where(OutgoingMail.notification_id.in_(chunk) & (OutgoingMail.state == "exception")).execute())
    host.log.info("mail queue: %s failed notification(s) ignored on messages %s", len(nids), list(message_ids))
    return len(nids)


def messages_with_failures() -> list[int]:
    return [r.message_id for r in Notification.select(Notification.message).distinct()
            .where(Notification.status.in_(chatter.FAILED))]


def resend(host, message: Message, only=(), fixes=None) -> dict:
    """"Send & close": resend to the chosen failed recipients (all failed by default), with
    corrected addresses (`fixes` {old: new} updates the partner), and ignore the others."""
    fixes = {emails.normalize(old): new for old, new in (fixes or {}).items()}
    for new in fixes.values():
        emails.split_address(new)
    only = {emails.normalize(o) for o in only}
    notes = list(failed_notifications([message.id]))
    if not notes:
        raise InvalidInput(f"message {message.id} has no failed recipient to resend to")
    known = {n.partner.email_normalized for n in notes}
    unknown = (only | set(fixes)) - known
    if unknown:
        raise InvalidInput(f"not a failed recipient of message {message.id}: {', '.join(sorted(unknown))}")
    chosen = [n for n in notes if not only or n.partner.email_normalized in only]
    others = [n for n in notes if n not in chosen]
    now = host.clock.now()
    with host.transaction():
        for n in chosen:
            new = fixes.get(n.partner.email_normalized)
            if new:
                _, addr = emails.split_address(new)
                Partner.update(email=addr, email_normalized=addr.lower()).where(Partner.id == n.partner.id).execute()
        chosen_ids = [n.id for n in chosen]
        OutgoingMail.delete().where(OutgoingMail.notification_id.in_(chosen_ids)
                                    & (OutgoingMail.state.in_(("exception", "cancel")))).execute()
        Notification.update(status="ready", failure_type=None, failure_reason=None, updated_at=now
                            ).where(Notification.id.in_(chosen_ids)).execute()
        if others:
            Notification.update(status="canceled", updated_at=now).where(
                Notification.id.in_([n.id for n in others])).execute()
        from_notifications(host, message, Notification.id.in_(chosen_ids), bulk=False)
        from . import sending
        mid = message.id
        host.after_commit(lambda: sending.send_message_mails(host, mid), network=True)
    host.log.info("mail queue: message %s resent to %s, %s ignored", message.id,
                  [n.partner.email_normalized for n in chosen], len(others))
    return {"resent": [fixes.get(n.partner.email_normalized) or n.partner.email for n in chosen],
            "ignored": [n.partner.email for n in others]}
