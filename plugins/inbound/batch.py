"""Storing a batch of prepared messages set-based: the writer's common case in a fixed
number of statements per batch, whatever its size.

The common case is a message to one alias that opens a record: no reply, no bounce, no
attachment, nobody mentioned, not automatic, not a duplicate, its sender within the loop
limits and allowed by the alias's policy. For those, the batch looks up the aliases,
the duplicates, the senders' partners and the loop counts once, then writes the new
partners, records, messages, notifications, followers, originals and decision rows with
one multi-row INSERT each: the same rows, hooks and log lines as `routing.store` makes
one message at a time (about a dozen statements per message, most of the writer's time).
Every other message of the batch is then stored by `routing.store`, in the same
transaction, after the common ones, so that it sees their rows (a Message-Id, a partner,
a loop count) exactly as if they had been stored one by one before it.

Anything unexpected raises: the writer then rolls the batch back and stores each message
on its own (`routing.store`, a savepoint each), so a message this module mishandles costs
speed, never a guarantee. Runs inside the writer's transaction; touches only the database.
"""
from logging import INFO

from postroom.core import chatter, emails, subtypes
from postroom.core.db import built, insert_rows, insert_rows_later, is_postgres, rows_later, select_all_later
from postroom.core.errors import InvalidInput
from postroom.core.html import sanitize, text_to_html
from postroom.core.models import Message, Notification, Partner, Record

from . import auth, bounces, decisions, parsing, recipients, routing
from .aliases import contact_refusal
from .models import InboundDecision, InboundOriginal
from .settings import settings


def store_batch(host, items, lmtp=False) -> list:
    """[(rcpt, reply line)] for each prepared message (`routing.Received`) of `items`, in
    their order, all written in the caller's transaction.

    Within `db.pipeline()` (the writer's, on PostgreSQL) every read the common case needs
    goes out at once, asked for each message that might be one, and is answered in one
    round trip; the pipeline ends before `routing.store`, which is not written for it."""
    aliases_later = recipients.find_aliases_later(host, [a for r in items if r.error is None for a in r.rcpts])
    maybe = [r for r in items if r.error is None and r.mail is not None]
    ids_later = _stored_message_ids_later(host, [r.mail.message_id for r in maybe if r.mail.message_id])
    partners_later = _partners_later(host, {routing.sender_of(r.mail, r.mail_from) for r in maybe} - {""})
    loop = _Loop(host)
    for r in maybe:
        loop.ask((r.mail_from or "").lower(), routing.sender_of(r.mail, r.mail_from), r.client)
    aliases = aliases_later()
    common, rest = [], []
    for index, r in enumerate(items):
        verdicts = [recipients.check(host, a, aliases) for a in r.rcpts] if r.error is None else None
        alias = _alias_if_common(host, r, verdicts)
        (common if alias is not None else rest).append((index, r, verdicts, alias))
    results = [None] * len(items)
    if common:
        rest += _store_common(host, common, results, ids_later, partners_later, loop)
    host.db.end_pipeline()
    for index, r, _, _ in sorted(rest, key=lambda item: item[0]):
        results[index] = routing.store(host, r, lmtp)
    return results


def _alias_if_common(host, r, verdicts):
    """The alias `r` opens a record through when it is the common case, else None."""
    if verdicts is None or not verdicts or r.mail is None:
        return None
    mail = r.mail
    if mail.raw is None or mail.references or mail.auto_reason or mail.attachments:
        return None
    if any(v.kind != "alias" for v in verdicts):
        return None
    alias = verdicts[0].alias
    if any(v.alias.id != alias.id for v in verdicts) or alias.record_id is not None:
        return None
    if alias.model not in host.record_types or alias.contact not in ("everyone", "partners"):
        return None
    if bounces.is_bounce(mail, r.mail_from, verdicts) or auth.refusal(alias, verdicts[0].address, r.auth_result):
        return None
    if chatter.mentioned(mail.body):  # no query unless the body names an address
        return None
    return alias


class _Loop:
    """Loop protection over a batch: each key's count, read once, plus what the batch adds."""

    def __init__(self, host):
        self.host, self.s, self.counted, self.added, self.asked = host, settings(host), {}, {}, {}

    def ask(self, envelope, sender, client):
        """Send the count of one key now (see `decisions.recent_counts_later`)."""
        key = (envelope, sender, client)
        if key not in self.asked:  # the same call (and cache) as routing.loop_refusal
            s = self.s
            self.asked[key] = decisions.recent_counts_later(
                self.host, s.loop_minutes, envelope=envelope, sender=sender, client=client,
                caps={"envelope": s.loop_max, "from": s.loop_max, "peer": s.loop_max_peer})

    def allows(self, envelope, sender, client) -> bool:
        s = self.s
        key = (envelope, sender, client)
        if key not in self.counted:
            self.ask(envelope, sender, client)
            self.counted[key] = self.asked[key]()
        counts = self.counted[key]
        keys = (("envelope", envelope, s.loop_max), ("from", sender, s.loop_max), ("peer", client, s.loop_max_peer))
        return all(counts[name] + self.added.get((name, value), 0) < limit
                   for name, value, limit in keys if value)

    def add(self, envelope, sender, client):
        for name, value in (("envelope", envelope), ("from", sender), ("peer", client)):
            if value:
                self.added[(name, value)] = self.added.get((name, value), 0) + 1


class _Item:
    __slots__ = ("index", "r", "alias", "sender", "author", "new_author", "name", "values",
                 "email_from", "record", "message", "original_id", "message_id")


def _store_common(host, common, results, ids_later, partners_later, loop) -> list:
    """Store the common messages set-based; returns those that turned out not to be (a
    duplicate, a sender over a loop limit, a value a check refuses), for `routing.store`.
    The reads were sent by `store_batch` (`*_later`: call for the answer)."""
    back, items, seen = [], [], set()
    known, partners = ids_later(), partners_later()
    for entry in common:
        index, r, verdicts, alias = entry
        mail, sender = r.mail, routing.sender_of(r.mail, r.mail_from)
        mid = mail.message_id
        if mid and (mid in known or mid in seen):  # stored later, it is found a duplicate
            back.append(entry)
            continue
        author = partners.get(sender)
        if contact_refusal(host, alias, sender, author):
            back.append(entry)
            continue
        envelope = (r.mail_from or "").lower()
        if not loop.allows(envelope, sender, r.client):
            back.append(entry)
            continue
        item = _item(host, index, r, alias, sender, author)
        if item is None:
            back.append(entry)
            continue
        loop.add(envelope, sender, r.client)
        if mid:
            seen.add(mid)
        items.append(item)
    if items:
        _write(host, items, partners)
        for item in items:
            line = f"250 2.0.0 Ok: created {item.record.model},{item.record.id}"
            results[item.index] = [(rcpt, line) for rcpt in item.r.asked]
    return back


def _item(host, index, r, alias, sender, author):
    """The values of one message's rows, checked as `create_record`, `post_message` and
    `create_partner` check them; None when a check refuses (then `routing.store` says how)."""
    mail, item = r.mail, _Item()
    item.index, item.r, item.alias, item.sender, item.author, item.new_author = index, r, alias, sender, author, None
    try:
        rtype = host.record_types[alias.model]
        if author is None and sender and rtype.auto_follow:
            display_name, _ = emails.split_address(mail.from_display or sender)
            display_name = parsing.header_text({"n": display_name}, "n") if display_name else ""
            name = (display_name or sender.split("@")[0])[:256].strip()
            if not name:
                return None
            emails.check_header_text("partner name", name)
            item.new_author = (name, emails.split_address(sender)[1])
        item.name = (mail.subject or f"Mail from {sender or 'an unknown sender'}")[:512].strip()
        if not item.name:
            return None
        if mail.subject:
            emails.check_header_text("subject", mail.subject)
        if mail.from_display:
            emails.split_address(mail.from_display)
    except InvalidInput:
        return None
    values = dict(rtype.defaults)
    values.update(alias.defaults or {})
    item.values = values
    item.message_id = mail.message_id or chatter.make_message_id(host)
    return item


def _stored_message_ids_later(host, ids):
    """A function giving which of `ids` a message or a kept original already has (one
    query, sent now within `db.pipeline()`)."""
    if not ids:
        return set
    db, marks = host.db, ", ".join([host.db.param] * len(ids))
    sql = (f'SELECT "message_id" FROM "{Message._meta.table_name}" WHERE "message_id" IN ({marks}) UNION ALL '
           f'SELECT "message_id" FROM "{InboundOriginal._meta.table_name}" WHERE "message_id" IN ({marks})')
    rows = rows_later(db, sql, list(ids) * 2)
    return lambda: {row[0] for row in rows()}


def _partners_later(host, senders):
    """A function giving {address: the partner `records.find_partner` would give} for
    `senders` (one query, sent now within `db.pipeline()`)."""
    if not senders:
        return dict
    marks = ", ".join(["{p}"] * len(senders))
    rows = select_all_later(Partner, f'SELECT * FROM "partner" WHERE "email_normalized" IN ({marks}) '
                                     'ORDER BY "active" DESC, "id"', sorted(senders))

    def result() -> dict:
        found = {}
        for partner in rows():
            found.setdefault(partner.email_normalized, partner)
        return found
    return result


def _write(host, items, partners):
    """The rows of the common messages. Within `db.pipeline()` each statement whose answer
    the next ones do not need goes out with them: the partners and records are waited
    for, the messages with the originals, the notifications with the followers, the
    decision rows and the bounce counters."""
    now = host.clock.now()
    db = host.db
    # Partners for senders nobody knows yet (one per address, as the first of its mails names it).
    new = {}
    for item in items:
        if item.new_author is not None and item.sender not in partners:
            new.setdefault(item.sender, item.new_author)
    if new:
        fields = [Partner.name, Partner.email, Partner.email_normalized, Partner.notification_type,
                  Partner.message_bounce, Partner.active, Partner.created_at]
        rows = [(name, addr, addr.lower(), "email", 0, True, now) for name, addr in new.values()]
        for (sender, (name, addr)), pid in zip(new.items(), insert_rows(db, Partner, fields, rows, returning_ids=True)):
            partners[sender] = built(Partner, dict(id=pid, name=name, email=addr, email_normalized=addr.lower(),
                                                   notification_type="email", message_bounce=0, active=True,
                                                   created_at=now))
    for item in items:
        if item.author is None and item.new_author is not None:
            item.author = partners[item.sender]
    # Records, then their hook, as create_record does.
    fields = [Record.model, Record.name, Record.values, Record.created_at]
    ids = insert_rows(db, Record, fields, [(i.alias.model, i.name, i.values or None, now) for i in items],
                      returning_ids=True)
    # A hook nobody implements is not called per message (pluggy's call costs more than the
    # rows' Python work); asked per batch, so a plugin registered meanwhile is still called.
    created_hook = host.hook.postroom_record_created if host.hook.postroom_record_created.get_hookimpls() else None
    if created_hook is not None:
        db.end_pipeline()  # a hook's own statements are not written for a pipeline
    logging = host.log.isEnabledFor(INFO)
    for item, rid in zip(items, ids):
        item.record = built(Record, dict(id=rid, model=item.alias.model, name=item.name,
                                         values=item.values or None, created_at=now))
        if created_hook is not None:
            created_hook(host=host, record=item.record, values=item.values)
        if logging:
            host.log.info("record %s,%s created: %s", item.record.model, rid, item.name)
    messages_later = _insert_messages(host, items, now)
    originals_later = _keep_originals(host, items, now)
    subtype = subtypes.get(host, subtypes.DISCUSSION)
    message_ids = messages_later()
    notified_later = _fan_out(host, message_ids, subtype, now)
    follows = sorted({(i.record.id, i.author.id) for i in items if i.author is not None
                      and host.record_types[i.record.model].auto_follow})
    if follows:
        p = db.param
        db.execute_sql('INSERT INTO "follower" ("record_id", "partner_id") VALUES '
                       + ", ".join([f"({p}, {p})"] * len(follows)) + " ON CONFLICT DO NOTHING",
                       [v for pair in follows for v in pair])
    for item, oid in zip(items, originals_later()):
        item.original_id = oid
    decisions_logged = _log(host, items, now)
    # A normal mail shows its address works (routing._reset_bounce_counter): only for an
    # author whose counter is not already known to be 0.
    stale = sorted({i.sender for i in items if i.sender and not (
        i.author is not None and i.author.email_normalized == i.sender and not i.author.message_bounce)})
    if stale:
        marks = ", ".join([db.param] * len(stale))
        db.execute_sql(f'UPDATE "partner" SET "message_bounce" = 0 WHERE "email_normalized" IN ({marks}) '
                       'AND "message_bounce" > 0', stale)
    _posted(host, items, notified_later())
    decisions_logged()
    if host.hook.postroom_inbound_routed.get_hookimpls():
        for item in items:
            host.after_commit(lambda i=item: host.hook.postroom_inbound_routed(
                host=host, route="alias", message_id=i.r.mail.message_id, record=i.record))


def _insert_messages(host, items, now):
    """The messages on their new records, as `chatter.post_message` posts them (one
    INSERT); returns a function giving their ids, which also builds each item's message."""
    subtype = subtypes.get(host, subtypes.DISCUSSION)
    fields = [Message.record, Message.model, Message.author, Message.email_from, Message.subject, Message.body,
              Message.message_type, Message.is_internal, Message.parent, Message.message_id,
              Message.created_at, Message.subtype]
    rows = []
    for item in items:
        mail, author = item.r.mail, item.author
        email_from = mail.from_display
        if author is not None and not email_from:
            email_from = emails.display_address(author.name, author.email) if author.email else None
        item.email_from = email_from
        body = sanitize(mail.body) if mail.body_is_html else text_to_html(mail.body)
        rows.append((item.record.id, item.record.model, author.id if author else None, email_from,
                     mail.subject or None, body, "email", False, None, item.message_id, now, subtype.name))
    ids_later = insert_rows_later(host.db, Message, fields, rows, returning_ids=True)

    def result() -> list:
        ids = ids_later()
        for item, row, mid in zip(items, rows, ids):
            item.message = built(Message, dict(id=mid, model=row[1], email_from=row[3], subject=row[4],
                                               body=row[5], message_type="email", is_internal=False,
                                               message_id=item.message_id, created_at=now, subtype=subtype.name),
                                 {"record": item.record, "author": item.author})
        return ids
    return result


def _posted(host, items, notified):
    """What `chatter.post_message` does once a message is in: its hook (the mail queue
    turns its notifications into mails there) and its log line. Every statement of the
    batch has been answered first: a hook's own are not written for a pipeline."""
    posted_hook = host.hook.postroom_message_posted if host.hook.postroom_message_posted.get_hookimpls() else None
    if posted_hook is not None:
        host.db.end_pipeline()
    logging = host.log.isEnabledFor(INFO)
    for item in items:
        n = notified.get(item.message.id, 0)
        if posted_hook is not None:
            posted_hook(host=host, message=item.message, notified=n)
        if logging:
            host.log.info("message %s posted on %s,%s (%s, %s notified) msgid=%s", item.message.id,
                          item.record.model, item.record.id, "email", n, item.message_id)


def _fan_out(host, message_ids, subtype, now):
    """A function giving {message id: notifications made}: the followers of each message's
    record subscribed to `subtype`, active, not its author (chatter._fan_out's rule, for
    many messages; a hook may have made followers of a new record), one INSERT ... SELECT."""
    db, p = host.db, host.db.param
    find = "strpos" if is_postgres(db) else "instr"
    subscribed = f'{find}(f."subtypes", {p}) > 0'
    if subtype.default:
        subscribed = f'(f."subtypes" IS NULL OR {subscribed})'
    kind, status = chatter.notification_kind_sql(chatter.email_channel_enabled(host), "pa.")
    sql = ('INSERT INTO "notification" ("message_id", "partner_id", "notification_type", "status", '
           f'"is_read", "updated_at") SELECT m."id", pa."id", {kind}, {status}, {p}, {p} '
           f'FROM "message" m {_followers_of_m(db)}'
           'JOIN "partner" pa ON pa."id" = f."partner_id" '
           f'WHERE m."id" IN ({", ".join([p] * len(message_ids))}) AND pa."active" AND {subscribed} '
           'AND (m."author_id" IS NULL OR pa."id" <> m."author_id") RETURNING "message_id"')
    params = [Notification.is_read.db_value(False), Notification.updated_at.db_value(now), *message_ids,
              f",{subtype.name},"]
    # Executed now on either engine: the followers these notifications go to are those of
    # this moment, before the batch's authors follow their records (as post_message).
    rows = rows_later(db, sql, params)

    def result() -> dict:
        counts = {}
        for (mid,) in rows():
            counts[mid] = counts.get(mid, 0) + 1
        return counts
    return result


def _followers_of_m(db) -> str:
    """The join from the batch's messages `m` to their records' followers `f`. On
    PostgreSQL each message's followers are read through the (record_id, partner_id) index:
    as a plain join, a planner without fresh statistics (autovacuum off, or not yet run
    after a burst of new records) hashed the whole follower table for every batch: 12 ms a
    batch with 113,000 followers, against 0.15 ms, and most of the database's work in the
    gateway bench. OFFSET 0 keeps the subquery from being flattened back into that join.
    SQLite's planner walks the index by itself."""
    if is_postgres(db):
        return ('CROSS JOIN LATERAL (SELECT "partner_id", "subtypes" FROM "follower" '
                'WHERE "record_id" = m."record_id" OFFSET 0) f ')
    return 'JOIN "follower" f ON f."record_id" = m."record_id" '


def _keep_originals(host, items, now):
    """The raw messages, with our Authentication-Results line on top (decisions.keep_original);
    returns a function giving their ids."""
    fields = [InboundOriginal.message_id, InboundOriginal.mail_from, InboundOriginal.size,
              InboundOriginal.content, InboundOriginal.created_at]
    rows = []
    for item in items:
        r, mail = item.r, item.r.mail
        trace = auth.header(host, r.auth_result) if r.auth_result else b""
        rows.append((mail.message_id, (r.mail_from or "")[:512], len(trace) + mail.size, trace + mail.raw, now))
    return insert_rows_later(host.db, InboundOriginal, fields, rows, returning_ids=True)


_DECISION_FIELDS = ("created_at", "peer", "mail_from", "sender", "recipients", "message_id", "verdict",
                    "route", "code", "reason", "model", "res_id", "original_id", "counts",
                    "envelope_sender", "client", "repeat", "auth")


def _log(host, items, now):
    """One decision row per message (routing._log's), in one INSERT; returns the function
    that writes their log lines (once the batch's other lines are out, as routing.store
    orders them)."""
    rows = []
    for item in items:
        r, rec = item.r, item.record
        rows.append(decisions.row(
            host, peer=r.peer, mail_from=r.mail_from, sender=item.sender, recipients=r.rcpts,
            message_id=r.mail.message_id, verdict="accepted", route="alias", code=250,
            reason=f"2.0.0 Ok: created {rec.model},{rec.id}", model=rec.model, res_id=rec.id,
            original_id=item.original_id, counts=True, client=r.client,
            auth=r.auth_result.text if r.auth_result else "", created_at=now))
    fields = [InboundDecision._meta.fields[name] for name in _DECISION_FIELDS]
    insert_rows(host.db, InboundDecision, fields, [tuple(v[name] for name in _DECISION_FIELDS) for v in rows])

    def log_lines():
        for values in rows:
            decisions.log(host, values)
    return log_lines
