"""Routing a received message, in Odoo's order: duplicate, bounce, reply, alias, reject.

`plan` decides, reading only (so `route test` can show it without sending anything);
`deliver` runs the plan's writes in one transaction, logs every decision, keeps the
original, and only then returns the reply lines, so a 250 always means "stored".
"""
import dataclasses
import email.errors

import peewee as pw

from postroom.core import attachments, chatter, emails, records
from postroom.core.models import Message, Record

from . import auth, bounces, decisions, parsing, recipients
from .aliases import contact_refusal
from .models import InboundAlias, InboundOriginal
from .parsing import is_daemon, parse
from .settings import settings

OK = 250


@dataclasses.dataclass
class Outcome:
    """What happens to some recipients of one message. `action(ids)` performs the writes
    inside the delivery's transaction and may return (code, text) to override the plan."""
    rcpts: list
    route: str
    code: int
    text: str
    action: object = None
    counts: bool = False
    record: Record | None = None
    author: object = None  # the partner it posted as, once its action ran

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    @property
    def line(self) -> str:
        return f"{self.code} {self.text}"


def sender_of(mail, mail_from) -> str:
    """The address loop protection and contact policies judge: From, else the envelope."""
    if mail.from_address:
        return mail.from_address
    return mail_from.lower() if emails.is_valid(mail_from or "") else ""


def loop_counts(host, envelope: str = "", sender: str = "", client: str = "") -> dict:
    """{"envelope", "from", "peer": what each key created within the loop window} (each at
    most its limit: decisions.recent_counts)."""
    s = settings(host)
    return decisions.recent_counts(host, s.loop_minutes, envelope=envelope, sender=sender, client=client,
                                   caps={"envelope": s.loop_max, "from": s.loop_max, "peer": s.loop_max_peer})


def loop_refusal(host, envelope: str = "", sender: str = "", client: str = "", counts=None) -> str | None:
    """The 550 text when the envelope sender, the From address or the client made us create
    too much lately (a mail loop, or a flood rotating one of them), else None. `client` is
    empty for a trusted MTA that did not name the original client. `counts` (from
    `loop_counts` for the same keys) saves reading them."""
    s = settings(host)
    if counts is None:
        counts = loop_counts(host, envelope, sender, client)
    limits = [("envelope", f"envelope sender <{envelope}>", s.loop_max, "inbound_loop_max"),
              ("from", f"From <{sender}>", s.loop_max, "inbound_loop_max"),
              ("peer", f"client {client}", s.loop_max_peer, "inbound_loop_max_peer")]
    for name, who, limit, key in limits:
        if counts[name] >= limit:
            return (f"5.7.1 {who}: more than {limit} messages within {s.loop_minutes} minutes ({key}); "
                    f"refused until the window passes (loop protection)")
    return None


class Unparseable(Exception):
    """A message the parser (or reading it) cannot handle: answered 554 5.6.0, never retried."""


UNPARSEABLE_ERRORS = (RecursionError, UnicodeError, LookupError, email.errors.MessageError)


def is_duplicate(message_id: str | None) -> bool:
    """Whether a message (posted, or kept as an original) already has this Message-Id: one
    statement, written once (it runs for every message received)."""
    if not message_id:
        return False
    db = Message._meta.database
    sql = _DUPLICATE_SQL.format(p=db.param, message=Message._meta.table_name,
                                original=InboundOriginal._meta.table_name)
    return db.execute_sql(sql, (message_id, message_id)).fetchone() is not None


_DUPLICATE_SQL = ('SELECT 1 FROM "{message}" WHERE "message_id" = {p} '
                  'UNION ALL SELECT 1 FROM "{original}" WHERE "message_id" = {p} LIMIT 1')


def reply_target(host, mail, dry_run: bool):
    """(record or None, parent message or None, found) for a reply to something we sent."""
    if not mail.references:
        return None, None, False
    # Only Message-Ids we generated: one a stranger chose (stored when their mail came in)
    # never makes their next mail a reply. The alias posting on the record comes along
    # (same query): a reply obeys its contact policy.
    query = (Message.select(Message, InboundAlias.id.alias("alias_id"))
             .join(InboundAlias, pw.JOIN.LEFT_OUTER, on=(InboundAlias.record_id == Message.record))
             .where(Message.message_id.in_(mail.references[:100]) & chatter.generated_here())
             .order_by(InboundAlias.id).objects())  # alias_id lands on the Message
    parents = {}
    for m in query:
        parents.setdefault(m.message_id, m)
    for ref in mail.references:
        if ref in parents:
            parent = parents[ref]
            return (Record.get_or_none(Record.id == parent.record_id) if parent.record_id else None), parent, True
    record = host.hook.postroom_inbound_reply(host=host, references=list(mail.references),
                                              message=mail.msg, dry_run=dry_run)
    return (record, None, True) if record is not None else (None, None, False)


def _reply_policy_refusal(host, parent, sender, address, auth_result):
    """(code, text) when the alias owning the replied record does not let `sender` write
    (its contact policy, or the sender authentication it requires), else None."""
    alias_id = getattr(parent, "alias_id", None) if parent is not None else None
    if alias_id is None:
        return None
    alias = InboundAlias.get_or_none(InboundAlias.id == alias_id)
    if alias is None:
        return None
    refused = auth.refusal(alias, address, auth_result)
    if refused:
        return refused
    if alias.contact == "everyone":
        return None
    author = records.find_partner(host, sender, required=False) if sender else None
    why = contact_refusal(host, alias, sender, author)
    return (550, f"5.7.1 reply refused by the contact policy of alias {alias.local_part} "
                 f"({alias.contact}): {why}") if why else None


_UNKNOWN = object()


def _poster(host, mail, sender, record, parent, author=_UNKNOWN, outcome=None):
    """The action that posts `mail` on `record` as an incoming email (by `author` when the
    caller already looked the sender's partner up); `outcome.author` says who it was."""
    def post(ids):
        nonlocal author
        if author is _UNKNOWN or author is None:  # None: another outcome may have made it since
            author = records.find_partner(host, sender, required=False) if sender else None
        if outcome is not None:
            outcome.author = author
        msg = chatter.post_message(
            host, record, mail.body, subject=mail.subject or None, author=author,
            email_from=mail.from_display, message_type="email", parent=parent,
            message_id=next(ids), body_is_html=mail.body_is_html,
            attachments=_storable(host, mail),
            # An automatic message is recorded but notifies nobody: it never makes us mail back.
            note=mail.auto_reason is not None)
        return msg
    return post


def _sender_partner(host, mail, sender, record, author):
    """The author of mail that opens a record: `author` (the sender's partner, looked up
    once), or a stranger made a partner, so that, posting as its author, they follow it and
    hear the answers (when the record type auto-follows). None when there is nobody."""
    rtype = host.record_types.get(record.model)
    if author is not None or not sender or (rtype is not None and not rtype.auto_follow):
        return author
    # Asked again: another outcome of this message (a second alias) may have made it.
    author = records.find_partner(host, sender, required=False)
    if author is not None:
        return author
    name, _ = emails.split_address(mail.from_display or sender)
    name = parsing.header_text({"n": name}, "n") if name else ""  # from_display keeps RFC 2047
    return records.create_partner(host, (name or sender.split("@")[0])[:256], sender)


def _storable(host, mail) -> list:
    """The mail's attachments, less any part over attachment_max_size (the whole mail was
    already bounded by inbound_max_size; one oversized part must not lose the message)."""
    limit = attachments.max_size(host)
    kept = [a for a in mail.attachments if len(a[1]) <= limit]
    if len(kept) < len(mail.attachments):
        host.log.warning("inbound: %s attachment(s) of %s over attachment_max_size (%s bytes) not stored",
                         len(mail.attachments) - len(kept), mail.message_id, limit)
    return kept


def plan(host, mail, mail_from, verdicts, dry_run=False, client="", auth_result=None) -> list[Outcome]:
    """The outcome for every recipient; reads only. Several recipients naming one alias
    (two of our domains, say) share one outcome: a message makes at most one record per alias."""
    out = [Outcome([v.address], "refused", v.code, v.text) for v in verdicts if not v.accepted]
    good = [v for v in verdicts if v.accepted]
    if not good:
        return out
    if is_duplicate(mail.message_id):
        return out + [Outcome([v.address for v in good], "duplicate", OK,
                              f"2.0.0 Ok: {mail.message_id} was already received; nothing new stored")]
    for v in (v for v in good if v.kind == "claimed"):
        def claimed(ids, v=v):
            code, text = v.handler(host, mail_from, v.address, mail.msg)
            return int(code), str(text)
        out.append(Outcome([v.address], "claimed", OK, "2.0.0 Ok: taken by a plugin", action=claimed))
    rest = [v for v in good if v.kind != "claimed"]
    if not rest:
        return out
    rcpts = [v.address for v in rest]
    sender = sender_of(mail, mail_from)
    if bounces.is_bounce(mail, mail_from, rest):
        info = bounces.analyse(host, mail, rest)
        found = bounces.targets(host, info)
        outcome = Outcome(rcpts, "bounce", OK, "2.0.0 Ok: " + bounces.describe(info, found))
        outcome.action = lambda ids: (bounces.apply(host, info, found), None)[1]
        return out + [outcome]
    record, parent, found = reply_target(host, mail, dry_run)
    envelope = (mail_from or "").lower()
    if found:
        refused = _reply_policy_refusal(host, parent, sender, rcpts[0], auth_result)
        if refused:
            return out + [Outcome(rcpts, "refused", *refused)]
        refusal = loop_refusal(host, envelope, sender, client)
        if refusal:
            return out + [Outcome(rcpts, "refused", 550, refusal)]
        where = f"{record.model},{record.id}" if record is not None else "a message without record"
        reply = Outcome(rcpts, "reply", OK, f"2.0.0 Ok: posted on {where} as a reply", counts=True, record=record)
        reply.action = _poster(host, mail, sender, record, parent, outcome=reply)
        return out + [reply]
    by_alias = {}
    for v in rest:
        if v.kind == "alias" and v.alias.id in by_alias:
            by_alias[v.alias.id].rcpts.append(v.address)
            continue
        if v.kind == "alias":
            by_alias[v.alias.id] = _alias_outcome(host, mail, sender, v, envelope, client, auth_result)
            out.append(by_alias[v.alias.id])
            continue
        if v.kind == "postmaster":
            out.append(Outcome([v.address], "postmaster", OK, "2.0.0 Ok: kept for the postmaster"))
        else:
            out.append(Outcome([v.address], "rejected", 550,
                               f"5.1.1 <{v.address}>: Recipient address rejected: "
                               f"mailbox unavailable (this mail answers no message we sent)"))
    return out


def _alias_outcome(host, mail, sender, v, envelope="", client="", auth_result=None) -> Outcome:
    alias, rcpts = v.alias, [v.address]
    refused = auth.refusal(alias, v.address, auth_result)
    if refused:
        return Outcome(rcpts, "refused", *refused)
    author = records.find_partner(host, sender, required=False) if sender else None
    why = contact_refusal(host, alias, sender, author)
    if why:
        return Outcome(rcpts, "refused", 550, f"5.7.1 <{v.address}>: {why}")
    refusal = loop_refusal(host, envelope, sender, client)
    if refusal:
        return Outcome(rcpts, "refused", 550, refusal)
    if alias.record_id is not None:
        record = Record.get_or_none(Record.id == alias.record_id)
        if record is None:
            return Outcome(rcpts, "refused", 550, f"5.1.1 <{v.address}>: mailbox unavailable "
                                                  f"(the alias's record {alias.record_id} no longer exists)")
        posted = Outcome(rcpts, "alias", OK, f"2.0.0 Ok: posted on {record.model},{record.id}",
                         counts=True, record=record)
        posted.action = _poster(host, mail, sender, record, None, author, outcome=posted)
        return posted
    if alias.model not in host.record_types:
        return Outcome(rcpts, "refused", 550, f"5.1.1 <{v.address}>: mailbox unavailable "
                                              f"(record type {alias.model} is not available)")
    if mail.auto_reason:
        return Outcome(rcpts, "refused", 550, f"5.7.1 <{v.address}>: an automatic message "
                                              f"({mail.auto_reason}) does not open a record (loop protection)")
    name = mail.subject or f"Mail from {sender or 'an unknown sender'}"

    def create(ids):
        record = records.create_record(host, alias.model, name[:512], alias.defaults)
        outcome.record = record
        _poster(host, mail, sender, record, None, _sender_partner(host, mail, sender, record, author),
                outcome=outcome)(ids)
        return 250, f"2.0.0 Ok: created {record.model},{record.id}"
    outcome = Outcome(rcpts, "alias", OK, f"2.0.0 Ok: would create a {alias.model} record named {name!r}",
                      action=create, counts=True)
    return outcome


class _Refused(Exception):
    """Raised inside the transaction to undo an SMTP delivery that is refused as a whole."""


def _message_ids(mail, host):
    """The Message-Id for the first stored message, then derived ones for further routes
    (one message to two aliases makes two chatter messages; Message-Ids are unique)."""
    base = mail.message_id or chatter.make_message_id(host)
    yield base
    n = 1
    while True:
        n += 1
        local, _, domain = base.strip("<>").partition("@")
        yield f"<{local}.route{n}@{domain}>" if domain else f"<{local}.route{n}>"


def _run(host, mail, outcomes):
    ids = _message_ids(mail, host)
    try:
        for o in outcomes:
            if o.action is None or not o.accepted:
                continue
            result = o.action(ids)
            if isinstance(result, tuple):
                o.code, o.text = result
    finally:
        # The actions hold the mail (and `create` its own outcome: a reference cycle). Drop
        # them now, or a large message's memory waits for the next cyclic collection.
        for o in outcomes:
            o.action = None


def unique_recipients(rcpts) -> list:
    """`rcpts` without repeats, compared case-insensitively (the first spelling is kept)."""
    return list({r.strip().lower(): r for r in reversed(list(rcpts))}.values())[::-1]


@dataclasses.dataclass
class Received:
    """A message parsed and authenticated outside any transaction: what `store` needs.
    `error` is set when it cannot be parsed (it is then stored as a 554 refusal)."""
    peer: str
    mail_from: str
    asked: list
    rcpts: list
    client: str
    mail: object = None
    auth_result: object = None
    error: BaseException | None = None


def prepare(host, *, peer="", mail_from="", rcpts=(), data=b"", client="", helo="") -> Received:
    """Parse `data` once and run the sender authentication (DNS work); touches no transaction,
    so it may run on any thread while another one writes."""
    received = parsed(host, peer=peer, mail_from=mail_from, rcpts=rcpts, data=data, client=client)
    authenticate(host, received, helo)
    return received


def parsed(host, *, peer="", mail_from="", rcpts=(), data=b"", client="") -> Received:
    """`prepare`'s first half: `data` parsed, not yet authenticated (no network)."""
    asked = list(rcpts)
    received = Received(peer, mail_from, asked, unique_recipients(asked), client)
    try:
        try:
            received.mail = parse(data, host.config.domains, host.config.get("bounce").lower())
        except Exception as exc:  # noqa: BLE001 - whatever the parser chokes on is the message's fault
            raise Unparseable() from exc
    except (Unparseable, *UNPARSEABLE_ERRORS) as exc:
        received.error = exc
    return received


def _authenticated(received) -> bool:
    """Whether the sender of a parsed message is authenticated. Bounces are judged by their
    tokens instead."""
    return received.error is None and bool(received.mail_from) and not is_daemon(received.mail_from)


def looks_up(host, received) -> bool:
    """Whether `authenticate` asks DNS for this message (network: not on a thread others wait for)."""
    return _authenticated(received) and auth.looks_up(host, received.mail)


def authenticate(host, received: Received, helo="") -> None:
    """`prepare`'s second half: the sender authentication, DNS work, before any transaction."""
    if not _authenticated(received):
        return
    try:
        received.auth_result = auth.check(host, received.mail, received.mail_from, received.client, helo)
    except UNPARSEABLE_ERRORS as exc:
        received.error = exc


def store(host, received: Received, lmtp=False) -> list[tuple]:
    """Route a prepared message and commit the outcome (a savepoint when the caller holds a
    transaction); returns [(rcpt, reply line)] in the order the recipients were given."""
    r = received
    try:
        if r.error is not None:
            raise r.error
        results = _deliver(host, r.peer, r.mail_from, r.rcpts, r.mail, r.auth_result, lmtp, r.client)
    except (Unparseable, *UNPARSEABLE_ERRORS) as exc:
        results = _unparseable(host, r.peer, r.mail_from, r.rcpts, r.client, exc)
    by_rcpt = {rcpt.strip().lower(): line for rcpt, line in results}
    return [(rcpt, by_rcpt[rcpt.strip().lower()]) for rcpt in r.asked]


def deliver(host, *, peer="", mail_from="", rcpts=(), data=b"", lmtp=False, client="", helo="") -> list[tuple]:
    """Route one received message and commit the outcome; returns [(rcpt, reply line)].

    SMTP (lmtp=False) is all or nothing: if any recipient is refused, nothing is stored and
    every recipient gets that refusal. LMTP answers each recipient on its own. A repeated
    recipient (any case) counts once. `client` is the address the peer loop limit counts
    ("" for a trusted MTA that did not name its client). A message the parser cannot
    handle is refused for good (554 5.6.0) and logged once. Database errors propagate
    (the gateway answers 451 4.3.0). `prepare` then `store`, on one thread."""
    received = prepare(host, peer=peer, mail_from=mail_from, rcpts=rcpts, data=data, client=client, helo=helo)
    return store(host, received, lmtp)


def _unparseable(host, peer, mail_from, rcpts, client, exc) -> list[tuple]:
    cause = exc.__cause__ if isinstance(exc, Unparseable) and exc.__cause__ else exc
    what = "nested too deeply" if isinstance(cause, RecursionError) else f"{type(cause).__name__}: {cause}"
    line = f"554 5.6.0 Message cannot be parsed ({what[:200]}); not accepted, do not retry"
    host.log.warning("inbound message from <%s> cannot be parsed: %s", mail_from, what[:500])
    with host.transaction():
        decisions.record(host, peer=peer, mail_from=mail_from, sender=(mail_from or "").lower(),
                         recipients=list(rcpts), verdict="refused", route="unparseable",
                         code=554, reason=line[4:], client=client)
    return [(r, line) for r in rcpts]


def _deliver(host, peer, mail_from, rcpts, mail, auth_result, lmtp, client) -> list[tuple]:
    sender = sender_of(mail, mail_from)
    common = {"peer": peer, "mail_from": mail_from, "sender": sender, "message_id": mail.message_id,
              "client": client, "auth": auth_result.text if auth_result else ""}
    for attempt in range(2):
        verdicts = [recipients.check(host, r) for r in rcpts]
        try:
            # flat: nothing here catches a failure of the core writes it nests (a record,
            # a post); any failure undoes the whole delivery, so they need no savepoints.
            with host.transaction(flat=True):
                outcomes = plan(host, mail, mail_from, verdicts, client=client, auth_result=auth_result)
                _run(host, mail, outcomes)
                refused = [o for o in outcomes if not o.accepted]
                if refused and not lmtp:
                    raise _Refused()
                _reset_bounce_counter(mail, sender, verdicts, outcomes)
                accepted = [o for o in outcomes if o.accepted]
                keep = [o for o in accepted if o.route != "duplicate"]
                original = (decisions.keep_original(host, mail, mail_from,
                                                    auth.header(host, auth_result) if auth_result else b"")
                            if keep else None)
                for o in outcomes:
                    _log(host, o, common, original.id if original and o.accepted else None)
                    if o.accepted and o.route in ("reply", "alias", "bounce", "claimed"):
                        host.after_commit(lambda o=o: host.hook.postroom_inbound_routed(
                            host=host, route=o.route, message_id=mail.message_id, record=o.record))
            break
        except _Refused:
            first = next(o for o in outcomes if not o.accepted)
            with host.transaction():
                decisions.record(host, **common, recipients=list(rcpts), verdict="refused",
                                 route=first.route, code=first.code, reason=first.text)
                _reset_bounce_counter(mail, sender, verdicts, outcomes)
            return [(r, first.line) for r in rcpts]
        except pw.IntegrityError:
            if attempt:  # the same Message-Id arrived twice at once: the second is a duplicate
                raise
    by_rcpt = {r: o.line for o in outcomes for r in o.rcpts}
    return [(r, by_rcpt[r]) for r in rcpts]


def _reset_bounce_counter(mail, sender, verdicts, outcomes):
    """Like Odoo: a normal mail from a partner's address (not a bounce, not automatic, not a
    message seen before, sent to addresses of ours) shows the address works, even if the
    mail itself is then refused."""
    if not sender or mail.auto_reason or not all(v.accepted for v in verdicts):
        return
    if any(o.route in ("bounce", "duplicate") for o in outcomes):
        return
    # The partner a post was just written as, read in this transaction, shows the counter
    # is already 0: no UPDATE then. (An address belongs to one partner: create_partner and
    # import refuse or skip one that is taken.)
    if any(o.author is not None and o.author.email_normalized == sender and not o.author.message_bounce
           for o in outcomes):
        return
    bounces.reset_counter_of(sender)


def _log(host, o, common, original_id):
    verdict = "accepted" if o.accepted else "refused"
    rec = o.record
    decisions.record(host, **common, recipients=o.rcpts, verdict=verdict, route=o.route, code=o.code,
                     reason=o.text, model=rec.model if rec else None, res_id=rec.id if rec else None,
                     original_id=original_id, counts=o.counts and o.accepted)


def smtp_reply(results) -> str:
    """One SMTP reply line for a whole transaction (all recipients share the outcome)."""
    lines = {line for _, line in results}
    if len(lines) == 1:
        return lines.pop()
    return f"250 2.0.0 Ok: delivered to {len(results)} recipients"


def explain(host, address, in_reply_to=None, sender="", subject="") -> dict:
    """What the gateway would answer for a mail to `address` (`route test`); writes nothing."""
    from email.message import EmailMessage
    verdict = recipients.check(host, address)
    result = {"address": address, "rcpt": verdict.line, "route": None, "data": None}
    if not verdict.accepted:
        return result
    refusal = (loop_refusal(host, (sender or "").lower(), (sender or "").lower())
               if verdict.kind in ("alias", "catchall") else None)
    if refusal:
        result["rcpt"] = f"550 {refusal}"
        return result
    msg = EmailMessage()
    if sender:
        msg["From"] = sender
    msg["To"] = address
    msg["Subject"] = subject or "(route test)"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to if in_reply_to.startswith("<") else f"<{in_reply_to}>"
    mail = parse(msg.as_bytes(), host.config.domains, host.config.get("bounce").lower())
    mail.message_id = None  # a test mail is never a duplicate
    outcome = plan(host, mail, sender, [verdict], dry_run=True)[0]
    result["route"], result["data"] = outcome.route, outcome.line
    if outcome.route == "claimed":
        result["data"] = "250 taken by the plugin that claims this address (its handler answers after DATA)"
    return result
