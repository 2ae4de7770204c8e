"""mail_queue's console screens: the email queue (filters, details, Retry / Send now / Cancel,
.eml, bulk retry, a 24-hour chart), a chatter message's envelope (Send & close with a Retry
toggle and an editable address per recipient, Ignore all) and the daily limit.

Every action calls the function its CLI command calls (`actions.retry`, `actions.resend`, ...).
"""
import datetime as dt
import os

from starlette.routing import Route

from postroom.core import chatter
from postroom.core.console.frame import (acting, audit, done, download, form_value, form_values, render,
                                         viewing)
from postroom.core.console.paging import capped_count, page_number, paginate
from postroom.core.models import Message, Record
from postroom.core.web import host_of

from . import actions, daily_limit, hourly, listing
from .models import STATES, OutgoingMail
from .settings import ACTION_NAME

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")
AGES = {"": None, "1h": dt.timedelta(hours=1), "24h": dt.timedelta(days=1),
        "7d": dt.timedelta(days=7)}


def _record_of(mail_or_message) -> Record | None:
    message_id = getattr(mail_or_message, "chatter_message_id", None)
    if message_id is None and isinstance(mail_or_message, Message):
        return mail_or_message.record
    message = Message.get_or_none(Message.id == message_id) if message_id else None
    return message.record if message is not None else None


# --- the queue ------------------------------------------------------------------------------

# What the listing shows: not the bodies, headers and attachment lists (a newsletter's HTML
# is read and converted 50 times a page for nothing).
LISTED = (OutgoingMail.id, OutgoingMail.state, OutgoingMail.email_to, OutgoingMail.email_from,
          OutgoingMail.subject, OutgoingMail.attempts, OutgoingMail.created_at, OutgoingMail.failure_type,
          OutgoingMail.failure_reason, OutgoingMail.next_attempt_at, OutgoingMail.scheduled_at,
          OutgoingMail.lease_until)  # the last two: whether a held-back mail is due and free


def queue_query(host, state="", sender="", recipient="", older="", newer=""):
    """The queue filtered as the screen asks (the listed columns); newest first."""
    query = OutgoingMail.select(*LISTED).order_by(OutgoingMail.id.desc())
    if state in STATES:
        query = query.where(OutgoingMail.state == state)
    if sender:
        query = query.where(OutgoingMail.email_from.contains(sender))
    if recipient:
        query = query.where(OutgoingMail.email_to.contains(recipient))
    now = host.clock.now()
    if AGES.get(older):
        query = query.where(OutgoingMail.created_at <= now - AGES[older])
    if AGES.get(newer):
        query = query.where(OutgoingMail.created_at >= now - AGES[newer])
    return query


def queue_page(request):
    host = host_of(request)
    q = request.query_params
    filters = {"state": q.get("state", ""), "sender": q.get("sender", "").strip()[:200],
               "recipient": q.get("recipient", "").strip()[:200], "older": q.get("older", ""),
               "newer": q.get("newer", "")}
    # A text filter scans the addresses: no second scan to count them (newer/older pages only).
    page = paginate(queue_query(host, **filters).dicts(), page_number(request),
                    count=not (filters["sender"] or filters["recipient"]))
    # Why a mail waits, as `queue list` says it (one query for the page).
    page.rows = listing.with_waits(host, page.rows)
    chart = hourly.chart(host)
    peak = max([max(c["sent"], c["failed"], c["waiting"]) for c in chart] + [1])
    failed, more_failed = capped_count(OutgoingMail.select(OutgoingMail.id).where(OutgoingMail.state == "exception"))
    return render(request, "mail_queue/queue.html", {
        "page": page, "filters": filters, "states": STATES, "chart": chart, "peak": peak,
        "failed_count": failed, "more_failed": more_failed, "action_name": ACTION_NAME,
        "limit": daily_limit.limit_statuses(host)[0], "is_waiting": listing.is_waiting})


@viewing
def mail_page(request):
    host = host_of(request)
    mail = actions.get_mail(host, request.path_params["mail_id"])
    [row] = listing.with_waits(host, [listing.mail_row(mail)])  # as `queue show` says it
    for key in ("state", "server", "sent_at"):  # sent but not yet applied from the journal
        setattr(mail, key, row[key])
    return render(request, "mail_queue/mail.html", {
        "mail": mail, "reason": row["failure_reason"], "waiting": listing.is_waiting(row["failure_reason"]),
        "record": _record_of(mail)})


@viewing
def mail_eml(request):
    mail_id = request.path_params["mail_id"]
    return download(actions.export(host_of(request), mail_id), f"mail-{mail_id}.eml", "message/rfc822")


@acting
def retry(request):
    host = host_of(request)
    if form_value(request, "all_failed") == "1":
        ids = actions.retry(host, all_failed=True)
        audit(request, f"retried all {len(ids)} failed mail(s)")
        return done(request, f"{len(ids)} failed mail(s) back to outgoing; sent at the next run of {ACTION_NAME!r}")
    ids = actions.retry(host, form_values(request, "id"))
    for mail in OutgoingMail.select().where(OutgoingMail.id.in_(ids)):
        audit(request, f"retried mail {mail.id} to {mail.email_to}", _record_of(mail))
    return done(request, f"{len(ids)} mail(s) back to outgoing; sent at the next run of {ACTION_NAME!r}")


@acting
def send_now(request):
    host = host_of(request)
    ids = form_values(request, "id")
    if not ids:
        return done(request, "Refused: choose at least one mail")
    mails = {m.id: m for m in OutgoingMail.select().where(OutgoingMail.id.in_(actions.parse_ids(ids)))}
    done_ids = actions.send_now(host, ids)
    states = {m.id: m for m in OutgoingMail.select().where(OutgoingMail.id.in_(done_ids))}
    words = []
    for mail_id in done_ids:
        m = states.get(mail_id)
        outcome = m.state if m else "sent (deleted: auto_delete)"
        if m is not None and m.failure_reason:
            outcome += f" ({m.failure_reason})"
        words.append(f"mail {mail_id}: {outcome}")
        if mail_id in mails:
            audit(request, f"sent mail {mail_id} to {mails[mail_id].email_to} now: {outcome}", _record_of(mails[mail_id]))
    return done(request, "; ".join(words) or "nothing to send")


@acting
def cancel(request):
    host = host_of(request)
    ids = form_values(request, "id")
    if not ids:
        return done(request, "Refused: choose at least one mail")
    mails = list(OutgoingMail.select().where(OutgoingMail.id.in_(actions.parse_ids(ids))))
    done_ids = actions.cancel(host, ids)
    for mail in mails:
        if mail.id in done_ids:
            audit(request, f"canceled mail {mail.id} to {mail.email_to}", _record_of(mail))
    return done(request, f"{len(done_ids)} mail(s) canceled")


# --- a chatter message's envelope --------------------------------------------------------------

@viewing
def envelope_page(request):
    msg = chatter.get_message(host_of(request), request.path_params["message_id"])
    rows = chatter.notification_rows(msg)
    return render(request, "mail_queue/envelope.html", {
        "msg": msg, "rows": rows, "envelope": chatter.envelope(msg),
        "failed": [r for r in rows if r["status"] in chatter.FAILED]})


@acting
def resend(request):
    """Send & close: the checked recipients are resent (at their address as edited), the
    unchecked failed ones ignored (`message resend --only ... --fix OLD=NEW`)."""
    host = host_of(request)
    msg = chatter.get_message(host, request.path_params["message_id"])
    failed = [r for r in chatter.notification_rows(msg) if r["status"] in chatter.FAILED]
    chosen = [r for r in failed if form_value(request, f"retry_{r['id']}") == "1"]
    if not chosen:
        return done(request, "Refused: tick Retry for at least one recipient, or use Ignore all")
    fixes = {}
    for r in chosen:
        new = form_value(request, f"email_{r['id']}", r["email"])
        if new and new.lower() != r["email"]:
            fixes[r["email"]] = new
    result = actions.resend(host, msg, [r["email"] for r in chosen], fixes)
    audit(request, f"Send & close on message {msg.id}: resent to {', '.join(result['resent'])}"
          + (f"; ignored {', '.join(result['ignored'])}" if result["ignored"] else ""), msg.record)
    return done(request, f"Resent to {', '.join(result['resent'])}"
                + (f"; ignored {', '.join(result['ignored'])}" if result["ignored"] else "")
                + f". Envelope: {chatter.envelope(msg)}.")


@acting
def ignore(request):
    host = host_of(request)
    msg = chatter.get_message(host, request.path_params["message_id"])
    count = actions.ignore(host, [msg.id])
    audit(request, f"Ignore all on message {msg.id}: {count} failed recipient(s) ignored", msg.record)
    return done(request, f"Ignored {count} failed recipient(s); the envelope is {chatter.envelope(msg)}.")


# --- daily limit ------------------------------------------------------------------------------

def limit_page(request):
    return render(request, "mail_queue/limit.html", {"statuses": daily_limit.limit_statuses(host_of(request))})


def register(register):
    register("/queue", [
        Route("/", queue_page, methods=["GET"]),
        Route("/retry", retry, methods=["POST"]),
        Route("/send-now", send_now, methods=["POST"]),
        Route("/cancel", cancel, methods=["POST"]),
        Route("/message/{message_id:int}", envelope_page, methods=["GET"]),
        Route("/message/{message_id:int}/resend", resend, methods=["POST"]),
        Route("/message/{message_id:int}/ignore", ignore, methods=["POST"]),
        Route("/{mail_id:int}", mail_page, methods=["GET"]),
        Route("/{mail_id:int}/eml", mail_eml, methods=["GET"]),
    ], nav="Email queue", templates=TEMPLATES, links={"message": "/queue/message/{id}"})
    register("/limit", [Route("/", limit_page, methods=["GET"])], nav="Daily limit", templates=TEMPLATES)
