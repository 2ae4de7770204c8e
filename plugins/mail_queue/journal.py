"""The outcome journal (mail_queue_progress): what makes a mail's outcome durable right after
the server's answer without rewriting the mail's row and its indexes for each mail.

Each answer appends one small statement: the mail just sent (`sent`, with its server) and
the mail handed to SMTP next (`sending`, its in-flight mark). The append reads nothing: the
ledger appends only while its claim was renewed less than a third of a lease ago (so no
other worker can hold those mails), and every reader matches a journal row to its mail's
lease_owner, so a row whose claim was lost is never applied. The journal has no key and
no index, so the append writes one page; changing the mail's state touched the row and
three state indexes (measured on SQLite: 18-24 us against 97-104 us a mail).

Its rows are applied to mail_queue_mail set-based, by the claim itself (`ledger.Ledger`:
at the end of its batch, and every APPLY_EVERY seconds of a long one), or, when the worker
died, by the next worker before it takes the claim over (`apply_expired`, from
`claims.claim`): the mails it had sent become `sent` and are never sent again, the one in
flight gets its `sending_since` (in doubt: retried once, same Message-Id). Until then the
listings read a sent mail's state from here (`overlay`)."""
import peewee as pw

from postroom.core.db import chunks

from postroom.core.models import Notification

from .models import OutcomeJournal, OutgoingMail

J, M, N = OutcomeJournal, OutgoingMail, Notification
# A long batch (a slow server) applies what it journaled at least this often, so the mails
# it sent stop showing as outgoing to anything reading mail_queue_mail directly.
APPLY_EVERY = 10.0

_COLUMNS = 'INSERT INTO "mail_queue_progress" ("mail_id", "token", "outcome", "server", "at") VALUES '
_SENT = _COLUMNS + "({p}, {p}, 'sent', {p}, {p})"
_SENT_AND_MARK = _SENT + ", ({p}, {p}, 'sending', NULL, {p})"
_MARK = ('INSERT INTO "mail_queue_progress" ("mail_id", "token", "outcome", "at") '
         'SELECT "id", {p}, \'sending\', {p} '
         'FROM "mail_queue_mail" WHERE "id" = {p} AND "lease_owner" = {p} RETURNING "mail_id"')
_SQL: dict = {}


def _sql(db, template):
    key = (template, db.param)
    sql = _SQL.get(key)
    if sql is None:
        sql = _SQL[key] = template.format(p=db.param)
    return sql


def append(db, token: str, now, sent_id: int, server: str, marked_id=None) -> None:
    """Journal `sent_id` as sent through `server` and `marked_id` (if any) as in flight under
    the claim `token`: one small INSERT (its own commit outside a transaction). It reads
    nothing: the ledger knows what its claim holds (a claim renewed less than a third of a
    lease ago cannot have been taken over, and a renewal re-reads what it holds), and a
    row whose claim was lost meanwhile is never applied (every reader matches a journal
    row to its mail's lease_owner); reading the two mails' rows here cost more than the
    insert (their pages are cold between two SMTP conversations)."""
    at = J.at.db_value(now)
    if marked_id is None:
        db.execute_sql(_sql(db, _SENT), (sent_id, token, server, at))
    else:
        db.execute_sql(_sql(db, _SENT_AND_MARK), (sent_id, token, server, at, marked_id, token, at))


def mark(db, token: str, now, mail_id: int) -> bool:
    """Journal `mail_id` as in flight if the claim still holds it (inside the caller's
    transaction); returns whether it does."""
    cursor = db.execute_sql(_sql(db, _MARK), (token, J.at.db_value(now), mail_id, token))
    return bool(cursor.fetchall())


def apply_claim(host, token: str, now, servers, notified: bool, deleted: bool, kept, final: bool) -> int:
    """Write what the live claim `token` journaled as sent through `servers` to its mails, in
    the caller's transaction, as `outcomes.write` writes sent mails (notifications sent,
    auto_delete mails deleted, the others `sent` and free), each statement driven by the
    journal rather than by a list of ids (rendering 200 ids a statement cost more than
    running it). The caller says what there is: `notified` (some have a notification),
    `deleted` (some are auto_delete), `kept` (the servers of the others). Then those rows
    go, and with `final` (the claim's work is done) every row of the claim; mid-batch the
    marks of mails in flight stay, and so do the rows of the claim's other servers (their
    own ledgers apply them). Returns how many mails it applied (deleted or updated)."""
    servers = sorted(set(servers))
    applied = 0
    ours = (J.token == token) & (J.outcome == "sent")
    sent = J.select(J.mail_id).where(ours & J.server.in_(servers))
    mine = (M.lease_owner == token) & (M.state == "outgoing") & M.id.in_(sent)
    if notified:
        (N.update(status="sent", failure_type=None, failure_reason=None, updated_at=now)
         .where(N.id.in_(M.select(M.notification_id).where(mine & M.notification_id.is_null(False))))
         .execute())
    if deleted:
        applied += M.delete().where(mine & M.auto_delete).execute()
    for name in sorted(set(kept)):
        by = J.select(J.mail_id).where(ours & (J.server == name))
        applied += (M.update(state="sent", sent_at=now, updated_at=now, attempts=M.attempts + 1,
                             failure_type=None, failure_reason=None, next_attempt_at=None, server=name,
                             lease_owner=None, lease_until=None, sending_since=None)
                    .where((M.lease_owner == token) & (M.state == "outgoing") & M.id.in_(by)).execute())
    J.delete().where((J.token == token) if final else (ours & J.server.in_(servers))).execute()
    return applied


def forget(token: str) -> None:
    """Delete the claim's journal rows, in the caller's transaction."""
    J.delete().where(J.token == token).execute()


def _held(now=None):
    """Journal rows whose claim still holds their mail (its lease ran out, with `now`)."""
    cond = (M.id == J.mail_id) & (M.lease_owner == J.token) & (M.state == "outgoing")
    return cond if now is None else cond & (M.lease_until < now)


def apply_expired(host, now) -> int:
    """Apply, in the caller's transaction, what workers whose lease ran out journaled: their
    sent mails become `sent` (still under the dead claim: `outcomes.finish` completes them),
    their mail in flight gets its `sending_since` (a taker retries it as in doubt), and
    their rows go. Returns how many mails were found sent. One query when there are none
    (it reads the journal, a few batches at most, and each row's mail by its key)."""
    tokens = [t for (t,) in J.select(J.token).distinct().join(M, on=_held(now)).tuples()]
    found = 0
    for token in tokens:
        sent = J.select(J.mail_id).where((J.token == token) & (J.outcome == "sent"))
        server = (J.select(J.server).where((J.mail_id == M.id) & (J.token == token) & (J.outcome == "sent"))
                  .limit(1))
        found += (M.update(state="sent", server=server, sending_since=None, updated_at=now)
                  .where((M.lease_owner == token) & (M.state == "outgoing") & M.id.in_(sent)).execute())
        flying = J.select(J.mail_id).where((J.token == token) & (J.outcome == "sending"))
        since = J.select(J.at).where((J.mail_id == M.id) & (J.token == token) & (J.outcome == "sending")).limit(1)
        (M.update(sending_since=since)
         .where((M.lease_owner == token) & (M.state == "outgoing") & M.sending_since.is_null()
                & M.id.in_(flying)).execute())
        forget(token)
    return found


def forget_orphans() -> int:
    """Delete journal rows whose claim no longer holds their mail (a worker that died after
    its mails were released or failed, or whose claim was taken over and applied): nothing
    reads them, since every reader matches a row to its mail's lease_owner."""
    held = M.select(M.id).where((M.id == J.mail_id) & (M.lease_owner == J.token))
    return J.delete().where(~pw.fn.EXISTS(held)).execute()


def sent_ids():
    """The query of the mail ids journaled as sent (their row may still say outgoing)."""
    return J.select(J.mail_id).where(J.outcome == "sent")


def sent_rows(ids) -> dict:
    """{mail id: (server, at)} of the mails among `ids` journaled as sent by the claim that
    still holds them (their row still says outgoing)."""
    found = {}
    for chunk in chunks(sorted(set(ids))):
        for mail_id, server, at in (J.select(J.mail_id, J.server, J.at).join(M, on=_held())
                                    .where((J.outcome == "sent") & J.mail_id.in_(chunk)).tuples()):
            found[mail_id] = (server, at)
    return found


def overlay(rows) -> list[dict]:
    """`rows` (listing dicts) with the state of mails sent but not yet applied from the
    journal: `sent`, with their server and time, as the operator must see them (their row
    says outgoing until the batch ends, or, if the worker died, until a worker takes the
    claim over). One query, only when a listed mail is outgoing."""
    outgoing = [r["id"] for r in rows if r.get("state") == "outgoing"]
    if not outgoing:
        return rows
    found = sent_rows(outgoing)
    for row in rows:
        hit = found.get(row["id"])
        if hit is not None:
            row["state"] = "sent"
            if "server" in row:
                row["server"] = hit[0]
            if "sent_at" in row:
                row["sent_at"] = hit[1]
    return rows


def in_flight(where=None) -> set:
    """Ids of outgoing mails marked in flight under a claim that still holds them: by their
    `sending_since`, or by a `sending` row in the journal not followed by its `sent` one."""
    cond = (M.state == "outgoing") & M.lease_owner.is_null(False)
    if where is not None:
        cond &= where
    marked = {i for (i,) in M.select(M.id).where(cond & M.sending_since.is_null(False)).tuples()}
    rows = list(J.select(J.mail_id, J.outcome).join(M, on=_held()).where(cond).tuples())
    sent = {i for i, o in rows if o == "sent"}
    return marked | ({i for i, o in rows if o == "sending"} - sent)

