"""The record of decisions (`inbound log`), the originals kept (`inbound export`), the
loop-protection count, and their vacuum."""
import datetime as dt
import logging
import weakref

import peewee as pw

from postroom.core import vacuum as core_vacuum
from postroom.core.db import insert_one, rows_later
from postroom.core.errors import NotFound
from postroom.core.records import parse_id

from .models import InboundDecision, InboundOriginal
from .parsing import unsurrogate


# Postfix's address verification (reject_unverified_recipient) asks with a probe: MAIL
# FROM:<double-bounce@its host> (its double_bounce_sender), RCPT TO, and no data. Such a
# refusal is Postfix checking an address, not a mail lost: say so where operators look.
PROBE_SENDER = "double-bounce"


def is_probe(mail_from: str) -> bool:
    """Whether an envelope sender is Postfix's verification probe (double-bounce@...)."""
    return (mail_from or "").partition("@")[0].lower() == PROBE_SENDER and "@" in (mail_from or "")


def label(verdict: str, mail_from: str) -> str:
    """The verdict as shown: `probe-refused` for Postfix's probes."""
    return f"probe-{verdict}" if is_probe(mail_from) else verdict


def record(host, *, peer="", mail_from="", sender="", recipients=(), message_id=None,
           verdict, route, code, reason, model=None, res_id=None, original_id=None,
           counts=False, client="", repeat=1, auth="", created_at=None) -> int:
    """Write one decision row (in the caller's transaction, or its own) and log it; returns
    its id (no model object is built: this runs for every message).

    `client` is the address loop protection counts for the peer (see models); `repeat`
    says how many refusals one aggregated row stands for."""
    values = row(host, peer=peer, mail_from=mail_from, sender=sender, recipients=recipients,
                 message_id=message_id, verdict=verdict, route=route, code=code, reason=reason,
                 model=model, res_id=res_id, original_id=original_id, counts=counts, client=client,
                 repeat=repeat, auth=auth, created_at=created_at)
    # Written directly: this runs for every message, and peewee compiling the INSERT cost
    # more than SQLite executing it.
    row_id = insert_one(host.db, InboundDecision, values)
    log(host, values)
    return row_id


def row(host, *, peer="", mail_from="", sender="", recipients=(), message_id=None,
        verdict, route, code, reason, model=None, res_id=None, original_id=None,
        counts=False, client="", repeat=1, auth="", created_at=None) -> dict:
    """The column values of one decision row, as `record` writes it (for callers that
    insert many rows in one statement: then `log` each)."""
    rcpts = unsurrogate(", ".join(recipients))
    reason, mail_from = unsurrogate(reason), unsurrogate(mail_from or "")
    return dict(
        created_at=created_at or host.clock.now(), peer=(peer or "")[:128], mail_from=(mail_from or "")[:512],
        sender=(sender or "")[:320], recipients=rcpts, message_id=(message_id or None),
        verdict=verdict, route=route, code=code, reason=reason, model=model, res_id=res_id,
        original_id=original_id, counts=counts, envelope_sender=mail_from.lower()[:320],
        client=(client or "")[:64], repeat=repeat, auth=auth or "")


def log(host, v: dict) -> None:
    """The log line of a decision row (`row`'s values), at INFO."""
    if not host.log.isEnabledFor(logging.INFO):  # the line's parts cost more than the row to build
        return
    peer, client, repeat, auth = v["peer"], v["client"], v["repeat"], v["auth"]
    host.log.info("inbound %s %s: peer=%s%s from=<%s> to=<%s> msgid=%s code=%s %s%s%s%s",
                  label(v["verdict"], v["mail_from"]), v["route"],
                  peer or "-", f" client={client}" if client and client != _ip(peer) else "",
                  v["mail_from"], v["recipients"], v["message_id"] or "-", v["code"], v["reason"],
                  f" record={v['model']},{v['res_id']}" if v["model"] else "", f" auth=({auth})" if auth else "",
                  f" (x{repeat} this minute)" if repeat > 1 else "")


def _ip(peer: str) -> str:
    return (peer or "").rpartition(":")[0] or peer


def keep_original(host, mail, mail_from, trace: bytes = b"") -> InboundOriginal:
    """Keep the raw message, with `trace` (our Authentication-Results line) on top as an MTA
    adds it. A spooled message goes from its file into SQLite through incremental blob I/O,
    never whole in memory (PostgreSQL takes the bytes)."""
    size = len(trace) + mail.size
    streamed = mail.raw is None and getattr(host.db, "engine", "") == "sqlite"
    values = dict(message_id=mail.message_id, mail_from=(mail_from or "")[:512], size=size,
                  created_at=host.clock.now())
    if streamed:
        row = InboundOriginal.create(**values, content=pw.fn.zeroblob(size))
    else:
        values["content"] = trace + mail.raw_bytes()
        row = InboundOriginal(**values)
        row.id = insert_one(host.db, InboundOriginal, values)
    if streamed:
        with host.db.connection().blobopen(InboundOriginal._meta.table_name, "content", row.id) as blob:
            blob.write(trace)
            mail.source.seek(0)
            for chunk in iter(lambda: mail.source.read(1 << 16), b""):
                blob.write(chunk)
    return row


_LOOP_COLUMNS = (("envelope", "envelope_sender"), ("from", "sender"), ("peer", "client"))


def recent_counts(host, minutes: int, envelope="", sender="", client="", caps=None) -> dict:
    """How many records/messages the envelope sender, the From address and the client each
    made us create within the last `minutes`, in one query: {"envelope": n, "from": n,
    "peer": n} (0 for an empty key).

    With `caps` ({name: n}) loop protection asks only whether a limit is reached, and the
    answer costs about nothing while a key is far below it: a count stops at its cap, and a
    key counted lately is not counted again while its last count plus every decision row
    made since (the id sequence moved by that much) stays below the cap; the value given
    is then that bound. Otherwise a busy sender's whole window is read twice per message
    (one sender's 5,000 messages: 5,000 index entries and table rows each time, most of
    the database's work in the gateway bench, and what two gateway processes share the
    machine's cores for). A refusal always comes from a real count. Rows still uncommitted
    when a key was counted can be missed, as by any count. Each count is its own range of
    its covering index (key, counts, created_at): `counts = true`, not a bare `counts`, or
    SQLite ranges over the key alone and reads the table for the rest. Plain SQL: peewee's
    compiler costs more than the answer."""
    return recent_counts_later(host, minutes, envelope, sender, client, caps)()


def recent_counts_later(host, minutes: int, envelope="", sender="", client="", caps=None):
    """`recent_counts` as a function to call for the answer: its statement goes out now
    within `db.pipeline()` (the gateway's writer asks every key of a batch at once)."""
    values = dict(zip(("envelope", "from", "peer"), (envelope, sender, client)))
    keys = [(name, column) for name, column in _LOOP_COLUMNS if values[name]]
    if not keys:
        return lambda: {"envelope": 0, "from": 0, "peer": 0}
    p, caps = host.db.param, caps or {}
    now = host.clock.now()
    since = InboundDecision.created_at.db_value(now - dt.timedelta(minutes=minutes))
    known = _counted.get(host)  # setdefault on a WeakKeyDictionary makes a weak reference each call
    if known is None:
        known = _counted.setdefault(host, {})
    true = InboundDecision.counts.db_value(True)
    shape, params, bases = [], [], []
    for name, column in keys:
        cap = caps.get(name)
        count_params = [values[name], true, since]
        basis = known.get((column, values[name], minutes)) if cap is not None else None
        if basis is not None and basis[2] > now:
            basis = None  # the clock went back: rows before the counted window may be back in it
        bases.append(basis)
        shape.append((name, column, cap, basis is None))
        if basis is None:
            params += count_params
        else:
            params += [basis[0], basis[1], int(cap)] + count_params
    key = (host.db.engine, p, tuple(shape))
    sql = _COUNT_SQL.get(key)
    if sql is None:  # the text of each shape is built once (it was most of a call's cost)
        sql = _COUNT_SQL[key] = _count_sql(host.db.engine, p, shape)
    rows = rows_later(host.db, sql, params)

    def result() -> dict:
        row = rows()[0]
        seq, found = int(row[0] or 0), {}
        if len(known) > _COUNTED_MAX:
            known.clear()
        for (name, column), basis, n in zip(keys, bases, row[1:]):
            n = int(n or 0)
            if n == -1:
                found[name] = basis[0] + seq - basis[1]
                continue
            found[name] = n
            if caps.get(name) is not None:
                known[(column, values[name], minutes)] = (n, seq, now)
        return {name: found.get(name, 0) for name in ("envelope", "from", "peer")}
    return result


def _count_sql(engine, p, shape) -> str:
    """The statement of `recent_counts` for one shape: (name, column, cap, counted afresh)
    per key."""
    columns = []
    for name, column, cap, afresh in shape:
        count = (f"(SELECT COUNT(*) FROM (SELECT 1 FROM inbound_decision WHERE {column} = {p} "
                 f"AND counts = {p} AND created_at >= {p}{f' LIMIT {int(cap)}' if cap is not None else ''}) AS c_{name})")
        # Otherwise counted again only once its bound reaches the cap.
        columns.append(count if afresh else f"CASE WHEN {p} + q.seq - {p} < {p} THEN -1 ELSE {count} END")
    return f"SELECT q.seq, {', '.join(columns)} FROM ({_SEQUENCE_SQL[engine]}) AS q"


_COUNT_SQL: dict = {}
# The last id handed out for a decision row; ids only move forward (SERIAL, AUTOINCREMENT),
# so its growth since a count bounds how many rows may have come since. A PostgreSQL
# sequence that never handed out an id shows its first one as `last_value` (is_called
# false): read as given, the table's first row would not have moved it, and a count taken
# before that row would have stayed one short for the rest of the window.
_SEQUENCE_SQL = {
    "postgresql": ("SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS seq "
                   "FROM inbound_decision_id_seq"),
    "sqlite": "SELECT COALESCE(MAX(seq), 0) AS seq FROM sqlite_sequence WHERE name = 'inbound_decision'",
}
# Per host (process): (column, value, minutes) -> (count, sequence value, when counted).
_counted = weakref.WeakKeyDictionary()
_COUNTED_MAX = 50_000


def search(host, sender=None, recipient=None, verdict=None, since=None, until=None):
    """The decision log, newest first, narrowed by sender (exact, From or envelope), a
    recipient (part of an address), verdict and a time range (`inbound log`, the console)."""
    query = InboundDecision.select().order_by(InboundDecision.id.desc())
    if sender:
        s = sender.strip().lower()
        query = query.where((InboundDecision.sender == s) | (pw.fn.LOWER(InboundDecision.mail_from) == s))
    if recipient:
        query = query.where(pw.fn.LOWER(InboundDecision.recipients).contains(recipient.strip().lower()))
    if verdict:
        query = query.where(InboundDecision.verdict == verdict)
    if since is not None:
        query = query.where(InboundDecision.created_at >= since)
    if until is not None:
        query = query.where(InboundDecision.created_at < until)
    return query


def as_row(d) -> dict:
    return {"id": d.id, "time": d.created_at, "peer": d.peer, "sender": d.sender or d.mail_from,
            "mail_from": d.mail_from, "recipients": d.recipients, "message_id": d.message_id,
            "client": d.client, "verdict": label(d.verdict, d.mail_from), "route": d.route, "code": d.code,
            "reason": d.reason, "repeat": d.repeat, "auth": d.auth,
            "record": f"{d.model},{d.res_id}" if d.model else None, "original_id": d.original_id}


def rows(host, sender=None, limit=100, **filters) -> list[dict]:
    """The newest `limit` decisions, listed newest last like every Postroom listing."""
    return [as_row(d) for d in reversed(list(search(host, sender=sender, **filters).limit(limit)))]


def original_of(host, decision_id) -> InboundOriginal:
    """The kept original of a logged delivery (by the ID `inbound log` shows)."""
    did = parse_id(decision_id, "inbound log entry")
    decision = InboundDecision.get_or_none(InboundDecision.id == did)
    if decision is None:
        raise NotFound(f"no inbound log entry {did}; see: postroom inbound log")
    if decision.original_id is None:
        raise NotFound(f"inbound log entry {did} was {decision.verdict}: only accepted mail keeps its original")
    original = InboundOriginal.get_or_none(InboundOriginal.id == decision.original_id)
    if original is None:
        raise NotFound(f"the original of inbound log entry {did} is no longer kept (removed by auto-vacuum)")
    return original


def vacuum(host, settings, batch_size, dry_run) -> dict:
    """Originals past their retention and decisions past theirs: at most `batch_size` of
    each per call, through `core.vacuum.sweep`, so the statement count stays flat."""
    now = host.clock.now()
    return core_vacuum.sweep(host, "inbound", {
        "inbound originals": (InboundOriginal, [
            InboundOriginal.created_at < now - dt.timedelta(days=settings.keep_originals_days)]),
        "inbound decisions": (InboundDecision, [
            InboundDecision.created_at < now - dt.timedelta(days=settings.keep_log_days)]),
    }, batch_size, dry_run)
