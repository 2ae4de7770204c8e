"""Posting on a record's chatter, computing recipients, and the envelope state.

Fan-out is set-based: one INSERT … SELECT creates every notification, so posting on a record
with 10,000 followers runs the same number of statements as posting on one with 10.
"""
import datetime as dt
import re
import secrets

import peewee as pw

from . import attachments as attachment_store, emails, subtypes
from .db import insert_one, is_postgres
from .errors import InvalidInput
from .html import sanitize, text_to_html
from .models import Message, Notification, Partner, Record
from .records import get_by_id

MESSAGE_TYPES = ("comment", "notification", "email")
FAILED = ("exception", "bounce")


def make_message_id(host, record: Record | None = None) -> str:
    """An RFC 5322 Message-Id carrying the record, like Odoo's, on the primary domain:
    `<microseconds.random-hex-postroom-ID-MODEL@domain>`.

    The time comes first so that ids made later sort after those made before: a new id
    goes in at the end of the indexes on Message-Ids (traces, chatter messages), which
    then touch a few pages per batch of inserts. With 64 random bits first, each insert
    landed on a page of its own, and a batch's inserts cost more as the table grew (a
    campaign's 1,000-trace INSERT: 6 ms at the start of 100,000 recipients, 20 ms by
    their end; time first: 4 to 7 ms throughout). The random part is what makes
    an id unguessable; the time is the mail's Date anyway. 16 digits until the year 2286."""
    token = f"{_microseconds(host):016d}.{secrets.token_hex(8)}"
    where = f"-postroom-{record.id}-{record.model}" if record is not None else ""
    return f"<{token}{where}@{host.config.primary_domain}>"


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _microseconds(host) -> int:
    """The host clock's time in whole microseconds since 1970 (exact: no float)."""
    return (host.clock.now() - _EPOCH) // dt.timedelta(microseconds=1)


def message_id_maker(host, record: Record | None = None):
    """A function returning a new Message-Id on each call, of `make_message_id`'s form, for
    a batch of mails. Each id keeps 64 random bits of its own (a recipient who sees theirs
    learns nothing of a neighbour's: replies and bounces are tied to mails by Message-Id),
    drawn from the system in one call per 256 ids; the time is read once for the batch
    (drawing and formatting both per recipient cost more than the rest of the id)."""
    head = f"<{_microseconds(host):016d}."
    where = f"-postroom-{record.id}-{record.model}" if record is not None else ""
    tail = f"{where}@{host.config.primary_domain}>"
    tokens = iter(())

    def new_id() -> str:
        nonlocal tokens
        token = next(tokens, None)
        if token is None:
            pool = secrets.token_bytes(8 * 256).hex()
            tokens = iter([pool[i:i + 16] for i in range(0, len(pool), 16)])
            token = next(tokens)
        return f"{head}{token}{tail}"
    return new_id


def generated_here():
    """The condition on `Message` that its Message-Id is ours: Postroom generated it for mail
    it sent. Incoming email (`message_type` `email`) keeps the Message-Id its sender chose,
    so it never makes a mail "a reply to us" nor a bounce "of a mail we sent"."""
    return Message.message_type != "email"


def email_channel_enabled(host) -> bool:
    return bool(host.hook.postroom_email_channel(host=host))


def notification_kind_sql(email_channel: bool, partner: str = "") -> tuple[str, str]:
    """SQL for a new notification's (type, status) from its partner's row (`partner`: the
    table's alias and a dot, if the query names one): a partner who wants email gets an
    email notification ready for the queue when an email channel is on (mail_queue), every
    other an inbox one, already delivered. One rule for every set-based fan-out."""
    if not email_channel:
        return "'inbox'", "'sent'"
    wants = f"""{partner}"notification_type" = 'email'"""
    return (f"CASE WHEN {wants} THEN 'email' ELSE 'inbox' END",
            f"CASE WHEN {wants} THEN 'ready' ELSE 'sent' END")


def post_message(host, record: Record, body: str, subject: str | None = None,
                 author: Partner | None = None, email_from: str | None = None,
                 partner_ids=(), note: bool = False, message_type: str = "comment",
                 parent: Message | None = None, message_id: str | None = None,
                 body_is_html: bool = False, attachments=(), subtype: str | None = None) -> Message:
    """Post on `record`'s chatter and notify its recipients, in one transaction.

    `attachments`: paths or `(name, bytes, mimetype)` (see `core.attachments.prepare`), or
    `(name, bytes, mimetype, content_id)` for an inline part; all are checked before
    anything is written, and stored with the message (its mails carry them).

    Recipients: the record's followers subscribed to the post's `subtype` (default
    `discussion`; see `core.subtypes`) plus `partner_ids` and the partners mentioned in
    the body (`@ann@example.com`); a note notifies only those named or mentioned. Never
    the author, never an inactive partner. Partners preferring email get a `ready` email
    notification when an email channel exists; everyone else is notified in-app. The
    author (a partner) then follows the record, unless its record type says otherwise.
    """
    if message_type not in MESSAGE_TYPES:
        raise InvalidInput(f"message type must be one of {', '.join(MESSAGE_TYPES)}")
    if subject:
        emails.check_header_text("subject", subject)
    if email_from:
        emails.split_address(email_from)
    if author is not None and not email_from:
        email_from = emails.display_address(author.name, author.email) if author.email else None
    body_html = sanitize(body) if body_is_html else text_to_html(body)
    subtype = subtypes.get(host, subtype or (subtypes.NOTE if note else subtypes.DISCUSSION)).name
    partner_ids = sorted({int(p) for p in partner_ids} | mentioned(body))
    files = attachment_store.prepare(host, attachments)
    email_channel = email_channel_enabled(host)
    now = host.clock.now()
    with host.transaction(join=True):
        values = dict(
            record=record, model=record.model if record else None, author=author,
            email_from=email_from, subject=subject, body=body_html, message_type=message_type,
            is_internal=note, parent=parent, message_id=message_id or make_message_id(host, record),
            created_at=now, subtype=subtype)
        message = Message(**values)
        # The SQL of a post is written directly (here, in _fan_out and _follow): the inbound
        # gateway posts every message it receives, and peewee compiling these statements
        # cost more than the database executing them.
        message.id = insert_one(host.db, Message, values)
        if files:
            attachment_store.store(host, files, "message", message.id)
        notified = _fan_out(host.db, message, record, author, partner_ids, note, email_channel, now,
                            subtype, host.subtypes[subtype].default)
        if author is not None and record is not None and not note and _auto_follow(host, record):
            _follow(host.db, record.id, author.id)
        host.hook.postroom_message_posted(host=host, message=message, notified=notified)
    host.log.info("message %s posted on %s,%s (%s, %s notified) msgid=%s", message.id,
                  message.model, record.id if record else "-", message_type, notified, message.message_id)
    return message


_MENTION = re.compile(r"(?<![\w.@])@([^\s@<>()\[\],;:\"']+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]{2,63})")


def mentioned(body: str) -> set[int]:
    """Ids of the active partners a body mentions as `@ann@example.com` (one query)."""
    addresses = {m.lower().rstrip(".") for m in _MENTION.findall(body or "")}
    if not addresses:
        return set()
    return {p.id for p in Partner.select(Partner.id).where(Partner.email_normalized.in_(sorted(addresses))
                                                           & Partner.active)}


def _auto_follow(host, record) -> bool:
    rtype = host.record_types.get(record.model)
    return rtype is None or rtype.auto_follow


def _fan_out(db, message, record, author, partner_ids, note, email_channel, now, subtype, default) -> int:
    """One INSERT … SELECT for every recipient; returns how many were notified: the
    record's followers subscribed to `subtype` (or to the defaults, when it is one) unless
    this is a note, plus `partner_ids`; active partners only, never the author."""
    p = db.param
    wanted, params = [], []
    if not note and record is not None:
        # A substring test, not LIKE with a bound pattern: SQLite prepares such a statement
        # again on every execution (the pattern might allow its LIKE optimisation), which
        # cost ten times the INSERT itself. Both sides hold the registered subtype name.
        find = "strpos" if is_postgres(db) else "instr"
        subscribed = f'{find}("subtypes", {p}) > 0'
        if default:
            subscribed = f'("subtypes" IS NULL OR {subscribed})'
        wanted.append(f'"id" IN (SELECT "partner_id" FROM "follower" WHERE "record_id" = {p} AND {subscribed})')
        params += [record.id, f",{subtype},"]
    if partner_ids:
        wanted.append(f'"id" IN ({", ".join([p] * len(partner_ids))})')
        params += list(partner_ids)
    if not wanted:
        return 0
    condition = '"active" AND (' + " OR ".join(wanted) + ")"
    if author is not None:
        condition += f' AND "id" <> {p}'
        params.append(author.id)
    kind, status = notification_kind_sql(email_channel)
    sql = ('INSERT INTO "notification" ("message_id", "partner_id", "notification_type", "status", '
           f'"is_read", "updated_at") SELECT {p}, "id", {kind}, {status}, {p}, {p} FROM "partner" '
           f"WHERE {condition}")
    head = [message.id, Notification.is_read.db_value(False), Notification.updated_at.db_value(now)]
    return db.execute_sql(sql, head + params).rowcount


def _follow(db, record_id: int, partner_id: int) -> None:
    """The author follows the record (nothing when it already does)."""
    p = db.param
    db.execute_sql(f'INSERT INTO "follower" ("record_id", "partner_id") VALUES ({p}, {p}) '
                   "ON CONFLICT DO NOTHING", (record_id, partner_id))


def get_message(host, message_id) -> Message:
    return get_by_id(Message, message_id, "message")


def envelopes(message_ids) -> dict:
    """{message id: 'red' | 'white' | 'none'} in one query: red while any notification is
    `exception` or `bounce`; white when email notifications exist; none for in-app only."""
    ids = list(message_ids)
    if not ids:
        return {}
    failed = pw.fn.SUM(pw.Case(None, [(Notification.status.in_(FAILED), 1)], 0))
    mailed = pw.fn.SUM(pw.Case(None, [(Notification.notification_type == "email", 1)], 0))
    rows = (Notification.select(Notification.message, failed.alias("failed"), mailed.alias("mailed"))
            .where(Notification.message.in_(ids)).group_by(Notification.message).tuples())
    result = {i: "none" for i in ids}
    for mid, nfailed, nmailed in rows:
        result[mid] = "red" if nfailed else ("white" if nmailed else "none")
    return result


def envelope(message) -> str:
    return envelopes([message.id])[message.id]


def notification_rows(message) -> list[dict]:
    query = (Notification.select(Notification, Partner).join(Partner)
             .where(Notification.message == message).order_by(Notification.id))
    return [{"id": n.id, "partner_id": n.partner.id, "email": n.partner.email_normalized,
             "channel": n.notification_type, "status": n.status, "failure_type": n.failure_type,
             "failure_reason": n.failure_reason} for n in query]


def chatter(record) -> list[Message]:
    return list(Message.select().where(Message.record == record).order_by(Message.id))
