"""`Mail Marketing: Process queue`: campaigns in order of creation, one at a time.

The head of the queue is the campaign already `sending`, else the oldest-created due
`in_queue` one; the next never starts before the head is `done`. Each batch turns the next
contacts (by id, after the campaign's cursor) into traces AND enqueues their mails in ONE
transaction that also moves the cursor: a process killed at any point either committed the
whole batch or none of it, so a resumed run skips nobody and mails nobody twice.
"""
import datetime as dt

import peewee as pw

from postroom.core import chatter, emails, scheduler, services
from postroom.core.db import insert_rows, values_present
from postroom.core.errors import InvalidInput

from . import mails
from .campaigns import ACTION_CODE, QUEUED, list_ids, remaining_recipients
from .models import Blacklist, Campaign, Contact, Trace

DEFAULT_BATCH = 500
DEFAULT_RUN_LIMIT = 5000
DEFAULT_RETRY_MINUTES = 60


class _Gone(Exception):
    """The campaign left the queue (canceled) while its batch was being built."""


def due_condition(now):
    return Campaign.state.in_(QUEUED) & (Campaign.scheduled_at.is_null() | (Campaign.scheduled_at <= now))


def queue_order():
    """Sending first (never interleave two campaigns), then creation order."""
    return [pw.Case(None, [(Campaign.state == "sending", 0)], 1), Campaign.created_at, Campaign.id]


def head_campaign(host) -> Campaign | None:
    return Campaign.select().where(due_condition(host.clock.now())).order_by(*queue_order()).first()


def run_action(host, run) -> None:
    """The scheduled action's handler: bounded batches of the head campaign, then the next."""
    batch = max(1, host.config.getint("marketing_batch_size", DEFAULT_BATCH))
    limit = max(1, host.config.getint("marketing_run_limit", DEFAULT_RUN_LIMIT))
    done, gone = 0, 0
    while done < limit and not run.should_stop() and gone < 10:
        head = head_campaign(host)
        if head is None:
            break
        _mark_head(host, head)
        try:
            count, finished = process_batch(host, head, min(batch, limit - done))
        except _Gone:
            gone += 1
            continue
        except Exception as exc:  # noqa: BLE001 - a stuck head is recorded, never fatal to the worker
            _record_error(host, head, exc)
            run.progress(done, 0)
            return
        if count and not done:
            # The queue may start on the first batch at once: another worker (the queue
            # action runs on every worker at the same time) sends it while this one
            # prepares the next batches, instead of waiting for the end of the run.
            services.mail(host).trigger_queue()
        done += count
        if finished:
            host.log.info("campaign %s done", head.id)
    if done:
        services.mail(host).trigger_queue()  # for the batches after the first
    run.progress(done, _remaining(host))


def _remaining(host) -> int:
    """Recipients still to trace in the head, plus one per other due campaign (a lower
    bound is enough to ask for a re-run)."""
    due = list(Campaign.select().where(due_condition(host.clock.now())).order_by(*queue_order()).limit(50))
    if not due:
        return 0
    return remaining_recipients(due[0]) + len(due) - 1 + (1 if due[0].state == "in_queue" else 0)


def _mark_head(host, campaign) -> None:
    if campaign.head_since is None:
        with host.transaction():
            (Campaign.update(head_since=host.clock.now())
             .where((Campaign.id == campaign.id) & Campaign.head_since.is_null()).execute())


def _record_error(host, campaign, exc) -> None:
    error = f"{type(exc).__name__}: {exc}"
    now = host.clock.now()
    host.log.error("campaign %s at the head of the marketing queue failed: %s; it blocks the "
                   "campaigns behind it until it is fixed or canceled (postroom campaign cancel %s)",
                   campaign.id, error, campaign.id, exc_info=True)
    retry = dt.timedelta(minutes=host.config.getint("marketing_retry_minutes", DEFAULT_RETRY_MINUTES))
    with host.transaction():
        (Campaign.update(last_error=error[:2000], last_error_at=now, error_count=Campaign.error_count + 1)
         .where(Campaign.id == campaign.id).execute())
        scheduler.trigger(host, ACTION_CODE, now + retry)


def _normalized(address: str | None) -> tuple[str | None, str | None]:
    """(normalised address, None) or (None, "missing" | "invalid"): parsed once per contact,
    at send time, whatever the import checked."""
    address = (address or "").strip()
    if not address:
        return None, "missing"
    try:
        return emails.normalize(address), None
    except InvalidInput:
        return None, "invalid"


def _next_contacts(host, list_ids, cursor: int, size: int) -> list[tuple]:
    """(id, name, email, opt_out) of the next `size` contacts of the lists after `cursor`,
    by id; the SQL written directly and the rows read as tuples (peewee building a dict
    per row cost more than the query)."""
    db = host.db
    sql = ('SELECT "id", "name", "email", "opt_out" FROM "marketing_contact" WHERE "list_id" IN ('
           + ", ".join([db.param] * len(list_ids or [0])) + f') AND "id" > {db.param} ORDER BY "id" LIMIT {db.param}')
    return db.execute_sql(sql, [*(list_ids or [0]), cursor, size]).fetchall()


def _reason(contact, norm, blacklisted, taken, seen) -> str | None:
    """Why a contact with a valid address gets no mail, or None."""
    if norm in blacklisted:
        return "blacklisted"
    if contact[3]:
        return "opted_out"
    if norm in taken or norm in seen:
        return "duplicate"
    return None


def process_batch(host, campaign, size: int) -> tuple[int, bool]:
    """Trace and enqueue the next `size` contacts of `campaign` in one transaction.
    Returns (contacts processed, campaign finished)."""
    now = host.clock.now()
    with host.transaction():
        ids = list_ids(campaign)
        contacts = _next_contacts(host, ids, campaign.cursor, size)
        parsed = [_normalized(c[2]) for c in contacts]
        norms = list({n for n, _ in parsed if n})
        blacklisted = values_present(Blacklist, Blacklist.email_normalized, norms)
        taken = values_present(Trace, Trace.email_normalized, norms,
                               '"campaign_id" = {p} AND "status" <> {p}', (campaign.id, "canceled"))
        record = mails.campaign_record(campaign)
        new_message_id = chatter.message_id_maker(host, record)
        rows, seen, names = [], set(), []
        campaign_id = campaign.id
        for c, (norm, reason) in zip(contacts, parsed):
            reason = reason or _reason(c, norm, blacklisted, taken, seen)
            message_id = None
            if reason is None:
                seen.add(norm)
                # Known before the mail exists, so the trace is written once, complete.
                message_id = new_message_id()
            names.append(c[1] if reason is None else None)
            rows.append((campaign_id, c[0], (c[2] or "")[:320] or None, norm,
                         "canceled" if reason else "outgoing", reason, message_id, now))
        fields = [Trace.campaign, Trace.contact_id, Trace.email, Trace.email_normalized, Trace.status,
                  Trace.cancel_reason, Trace.message_id, Trace.created_at]
        # The new ids in row order: the outgoing traces need no second query to be read back.
        ids_in_order = insert_rows(host.db, Trace, fields, rows, returning_ids=True)
        outgoing = [{"id": trace_id, "email": row[2], "message_id": row[6], "name": name}  # To: "Name" <address>
                    for trace_id, row, name in zip(ids_in_order, rows, names) if row[4] == "outgoing"]
        if outgoing:
            mails.enqueue_traces(host, campaign, outgoing, record=record)
        # Finish in the same transaction as the last batch, so no run is needed just to
        # notice there is nobody left.
        finished = len(contacts) < size or not (
            Contact.select().where(Contact.mailing_list.in_(ids or [0])
                                   & (Contact.id > contacts[-1][0])).exists())
        values = {"state": "done" if finished else "sending", "last_error": None,
                  "started_at": pw.fn.COALESCE(Campaign.started_at, now)}
        if contacts:
            values["cursor"] = contacts[-1][0]
        if finished:
            values.update(done_at=now, head_since=None)
        moved = (Campaign.update(**values)
                 .where((Campaign.id == campaign.id) & Campaign.state.in_(QUEUED)
                        & (Campaign.cursor == campaign.cursor)).execute())
        if not moved:
            raise _Gone()  # canceled or processed by someone else meanwhile: undo this batch
    host.log.info("campaign %s: %s recipients processed (%s mailed)%s", campaign.id, len(contacts),
                  len(outgoing), ", done" if finished else "")
    return len(contacts), finished


def queue_rows(host) -> list[dict]:
    """The marketing queue as the process action sees it: due campaigns in processing
    order (the head first), then those scheduled for later, by time."""
    now = host.clock.now()
    queued = list(Campaign.select().where(Campaign.state.in_(QUEUED)).order_by(*queue_order()))
    due = [c for c in queued if c.scheduled_at is None or c.scheduled_at <= now]
    later = sorted((c for c in queued if c not in due), key=lambda c: (c.scheduled_at, c.id))
    traced = dict(Trace.select(Trace.campaign, pw.fn.COUNT(Trace.id))
                  .where(Trace.campaign.in_([c.id for c in queued] or [0])).group_by(Trace.campaign).tuples())
    rows = []
    for position, c in enumerate(due + later, start=1):
        is_head = position == 1 and bool(due)
        since = (c.head_since or max(c.queued_at or c.created_at, c.scheduled_at or c.created_at)) if is_head else None
        rows.append({"position": position, "id": c.id, "subject": c.subject, "state": c.state,
                     "head": is_head, "created_at": c.created_at, "scheduled_at": c.scheduled_at,
                     "due": c in due, "head_since": since,
                     "at_head_for": _duration(now - since) if since else None,
                     "processed": traced.get(c.id, 0), "remaining": remaining_recipients(c),
                     "errors": c.error_count, "last_error": c.last_error, "last_error_at": c.last_error_at})
    return rows


def _duration(delta: dt.timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    return (f"{days}d " if days else "") + f"{hours}h{minutes:02d}m"
