"""Putting mail in the queue: the service's `enqueue` and the chatter's notifications.
(What an operator does with queued mail is `actions`.)"""
import datetime as dt
import email.utils

import peewee as pw

from postroom.core import attachments, chatter, emails, scheduler, template_store
from postroom.core.db import insert_rows as db_insert_rows
from postroom.core.errors import InvalidInput
from postroom.core.models import Message, Notification, Partner

from . import compose, sending, textpack
from .addressing import catchall, default_from, reply_to_for
from .models import OutgoingMail
from .settings import ACTION_CODE, ATTACHMENT_HOLDER, lifetime

_KEYS = frozenset({"email_to", "subject", "body_html", "email_from", "headers", "ref", "scheduled_at",
                   "message_id", "notification_id", "auto_delete", "bulk", "reply_to", "message",
                   "attachment_ids", "body_text", "recipient_name"})


# The columns of a new mail, in the order of `_row`'s tuples (the INSERT's column list).
_COLUMNS = ("email_to", "recipient_name", "subject", "body_html", "body_text", "email_from", "headers", "ref",
            "scheduled_at", "message_id", "notification_id", "message", "auto_delete", "bulk",
            "attachment_ids", "reply_to", "state", "attempts", "created_at", "updated_at", "expires_at")
_TO, _SCHEDULED, _MESSAGE_ID, _BULK, _FILES = map(_COLUMNS.index, (
    "email_to", "scheduled_at", "message_id", "bulk", "attachment_ids"))
_FIELDS = [OutgoingMail._meta.fields[name] for name in _COLUMNS]


def _row(host, mail: dict, now, from_default, expires_default, reply_default, expires_now=None) -> tuple:
    """One mail's validated column values, in `_COLUMNS` order (a tuple: a dict per mail,
    read back by name for the INSERT, cost a campaign batch more than the checks)."""
    if not isinstance(mail, dict):
        raise InvalidInput("each mail must be a dict")
    unknown = mail.keys() - _KEYS
    if unknown:
        raise InvalidInput(f"unknown mail keys: {', '.join(sorted(unknown))}")
    get = mail.get
    to_text = get("email_to")
    subject = get("subject") or ""
    email_from = get("email_from") or from_default
    message_id = get("message_id") or chatter.make_message_id(host)
    reply_to = get("reply_to") or reply_default
    extra = get("headers")
    # One scan for control characters over every text that becomes a header: the common
    # case has none, and nine scans cost a campaign mail more than its other checks. Only
    # a hit runs the checks field by field, whose refusal names the field.
    texts = [to_text or "", get("recipient_name") or "", subject, email_from or "", message_id,
             reply_to or ""]
    if type(extra) is dict:
        texts.extend(map(str, extra.values()))
    clean = not emails.has_control_chars("".join(texts))
    # Extra header values count as scanned only when they were (a plain dict): any other
    # mapping's values are checked one by one by check_headers.
    extra_scanned = clean and type(extra) is dict
    name, address = None, None
    if to_text and "recipient_name" in mail:
        # A bare address and its name apart (a campaign batch): no header parsing per mail.
        name, address = mail["recipient_name"] or None, to_text
        if not clean:
            emails.check_header_text("recipient", to_text + (name or ""))
        # The cheap test first: a valid address holds neither, so most never parse.
        if ("<" in to_text or "," in to_text) and not emails.is_valid_bare(to_text):
            raise InvalidInput(f"email_to must be a bare address when recipient_name is given, not {to_text!r}")
    elif to_text:
        if not clean:
            emails.check_header_text("recipient", to_text)
        if emails.BARE.match(to_text):  # the common case, without the cost of a parse
            address = to_text
        else:
            pairs = email.utils.getaddresses([to_text])
            if len(pairs) > 1:
                raise InvalidInput(f"one recipient per mail, not {to_text!r} (enqueue one mail each)")
            name, address = pairs[0] if pairs else (None, None)
            address = address or to_text
    if not clean:
        emails.check_header_text("subject", subject)
        emails.check_header_text("sender", email_from)
    ref = get("ref")
    if ref is not None and (not str(ref).isalnum() or not str(ref).isascii()):
        raise InvalidInput(f"ref must be letters and digits (it goes into the bounce address), not {ref!r}")
    scheduled = get("scheduled_at")
    if scheduled is not None and (not isinstance(scheduled, dt.datetime) or scheduled.tzinfo is None):
        raise InvalidInput("scheduled_at must be an aware datetime")
    if not clean:
        emails.check_header_text("Message-Id", message_id)
    if not (message_id.startswith("<") and message_id.endswith(">") and "@" in message_id):
        raise InvalidInput(f"Message-Id must look like <left@right>, not {message_id!r}")
    if not clean:
        emails.check_header_text("Reply-To", reply_to)
    if scheduled is not None or expires_now is None:
        expires_now = (max(now, scheduled) if scheduled else now) + expires_default
    body_html = get("body_html") or ""
    return (address, name or None, subject, body_html, textpack.pack(body_html, get("body_text") or None),
            email_from, compose.check_headers(extra, values_scanned=extra_scanned) or None, ref,
            scheduled, message_id, get("notification_id"), get("message"),
            bool(get("auto_delete", True)), bool(get("bulk", True)), _attachment_ids(get("attachment_ids")),
            reply_to, "outgoing", 0, now, now, expires_now)


def _attachment_ids(value) -> list[int] | None:
    if not value:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(i, int) for i in value):
        raise InvalidInput("attachment_ids must be a list of attachment ids")
    return list(value)


def _check_attachments(rows) -> None:
    """Every attachment a mail names exists (one query for the whole call)."""
    wanted = {i for r in rows for i in (r[_FILES] or ())}
    if wanted:
        found = {a.id for a in attachments.by_ids(sorted(wanted))}
        missing = sorted(wanted - found)
        if missing:
            raise InvalidInput(f"no attachment with id {', '.join(map(str, missing))}")


def insert_rows(host, rows: list[tuple]) -> list[int]:
    """Multi-row INSERTs in chunks of `_row`'s tuples; returns the new ids in order (inside
    a transaction)."""
    if not rows:
        return []
    return db_insert_rows(host.db, OutgoingMail, _FIELDS, rows, returning_ids=True)


def enqueue(host, mails: list[dict]) -> list[int]:
    """Validate and insert mails set-based; urgent ones leave after commit. See MailService."""
    now = host.clock.now()
    from_default = default_from(host)
    life = lifetime(host)
    reply_default = catchall(host)
    expires = now + life  # every unscheduled mail's: one datetime for the call
    rows = [_row(host, m, now, from_default, life, reply_default, expires) for m in mails]
    if not rows:
        return []
    _check_attachments(rows)
    with host.transaction():
        ids = insert_rows(host, rows)
        scheduled = [r[_SCHEDULED] for r in rows if r[_SCHEDULED] and r[_SCHEDULED] > now]
        for at in sorted(set(scheduled))[:20]:  # later ones: the regular runs pick them up
            scheduler.trigger(host, ACTION_CODE, at)
        urgent = [i for i, r in zip(ids, rows) if not r[_BULK] and not
                  (r[_SCHEDULED] and r[_SCHEDULED] > now)]
        if urgent:
            host.after_commit(lambda: sending.send_ids(host, urgent), network=True)
    for mail_id, row in zip(ids, rows):
        host.log.info("mail %s msgid=%s enqueued to %s (%s)", mail_id, row[_MESSAGE_ID], row[_TO],
                      "scheduled at " + row[_SCHEDULED].isoformat() if row[_SCHEDULED]
                      else "bulk" if row[_BULK] else "urgent")
    return ids


def enqueue_with_files(host, mails: list[dict], files) -> list[int]:
    """`enqueue`, each mail holding its own copy of `files` (`core.attachments.prepare`d;
    the content is stored once). The attachments go when the mail is deleted (vacuum)."""
    with host.transaction():
        ids = enqueue(host, mails)
        for mail_id in ids if files else ():
            held = attachments.store(host, files, ATTACHMENT_HOLDER, mail_id)
            (OutgoingMail.update(attachment_ids=[a.id for a in held])
             .where(OutgoingMail.id == mail_id).execute())
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
    files = [a.id for a in attachments.of("message", message.id)] or None
    query = (Notification.select(
        V(message.id), Notification.id, V(email_from), Partner.email, Partner.name,
        V(subject), V(template_store.notification_body(host, message, record)),
        V(OutgoingMail.attachment_ids.db_value(files)),
        V(message.message_id),
        V(parent.message_id if parent else None), V(parent.message_id if parent else None),
        V(reply_to_for(host, record)), V("outgoing"), V(bulk), V(True), V(0),
        V(now, converter=conv["dt"]), V(now, converter=conv["dt"]),
        V(now + lifetime(host), converter=conv["dt"]))
        .join(Partner, on=(Notification.partner == Partner.id))
        .where((Notification.message == message.id) & (Notification.notification_type == "email")
               & (Notification.status == "ready") & where))
    F = OutgoingMail
    created = (F.insert_from(query, [F.message, F.notification_id, F.email_from, F.email_to,
                                     F.recipient_name, F.subject, F.body_html, F.attachment_ids,
                                     F.message_id,
                                     F.in_reply_to, F.references, F.reply_to, F.state, F.bulk,
                                     F.auto_delete, F.attempts, F.created_at, F.updated_at,
                                     F.expires_at])
               .as_rowcount().execute())
    if created:  # one line per mail, with its id and Message-Id (what zgrep follows)
        mine = Notification.select(Notification.id).where((Notification.message == message.id) & where)
        for mail_id, to, nid in (F.select(F.id, F.email_to, F.notification_id).where(
                (F.message == message.id) & (F.state == "outgoing") & F.notification_id.in_(mine))
                .order_by(F.id).tuples()):
            host.log.info("mail %s msgid=%s enqueued to %s (%s, notification %s)", mail_id,
                          message.message_id, to, "bulk" if bulk else "urgent", nid)
    return created


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
        mid = message.id
        host.after_commit(lambda: sending.send_message_mails(host, mid), network=True)
    else:
        scheduler.trigger(host, ACTION_CODE, host.clock.now())
