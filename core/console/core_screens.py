"""The core's console screens: records and their chatter, scheduled actions, the doctor.

Each action calls the function its CLI command calls (`records.follow`, `scheduler.set_interval`,
`scheduler.run_by_hand`, `doctor.run_checks`, ...); errors an operator can act on come back as
the page's one-line message, as they would on stderr.
"""
import datetime as dt

from starlette.routing import Route

from .. import attachments, chatter, doctor, records, scheduler
from ..models import Follower, Message, Partner, Record
from ..web import host_of
from .frame import acting, audit, done, download, error_page, form_value, render, viewing
from .paging import page_number, paginate

RUN_WARNING = ("Running a scheduled action by hand is not recommended: it can disturb the work of "
               "the scheduled runs and will not speed up large queues.")


def message_link(request, message_id: int) -> str:
    """Where a message's envelope leads: a plugin's envelope screen (mail_queue registers
    one as `links={"message": ...}`), else the core's read-only details."""
    for group in request.app.state.groups:
        if group.links and "message" in group.links:
            return group.links["message"].format(id=message_id)
    return f"/records/message/{message_id}"


# --- records ------------------------------------------------------------------------------

def record_list(request):
    host = host_of(request)
    model = request.query_params.get("model", "")
    search = request.query_params.get("q", "").strip()[:200]
    query = Record.select().order_by(Record.id.desc())
    if model:
        if model not in host.record_types:
            return error_page(request, f"unknown record type {model!r}", 404)
        query = query.where(Record.model == model)
    if search:
        query = query.where(Record.name.contains(search))
    page = paginate(query, page_number(request))
    return render(request, "records.html", {"page": page, "model": model, "q": search,
                                            "types": sorted(host.record_types.values(), key=lambda t: t.name)})


@viewing
def record_page(request):
    host = host_of(request)
    rec = records.get_record(host, request.path_params["model"], request.path_params["res_id"])
    followers = list(Partner.select().join(Follower).where(Follower.record == rec).order_by(Partner.id))
    page = paginate(Message.select().where(Message.record == rec).order_by(Message.id.desc()),
                    page_number(request))
    ids = [m.id for m in page.rows]
    files = {}
    for att in _attachments_of(ids):
        files.setdefault(att.res_id, []).append(att)
    return render(request, "record.html", {
        "rec": rec, "followers": followers, "page": page, "envelopes": chatter.envelopes(ids),
        "files": files, "link": lambda mid: message_link(request, mid)})


def _attachments_of(message_ids):
    from ..models import Attachment
    if not message_ids:
        return []
    return list(Attachment.select().where((Attachment.res_model == "message")
                                          & Attachment.res_id.in_(message_ids)).order_by(Attachment.id))


@acting
def record_follow(request):
    host = host_of(request)
    rec = records.get_record(host, request.path_params["model"], request.path_params["res_id"])
    partner = records.find_partner(host, form_value(request, "email"))
    added = records.follow(host, rec, partner)
    if added:
        audit(request, f"added follower {partner.email}", rec)
    return done(request, f"{partner.email} {'now follows' if added else 'already follows'} {rec.name}")


@acting
def record_unfollow(request):
    host = host_of(request)
    rec = records.get_record(host, request.path_params["model"], request.path_params["res_id"])
    partner = records.find_partner(host, form_value(request, "email"))
    removed = records.unfollow(host, rec, partner)
    if removed:
        audit(request, f"removed follower {partner.email}", rec)
    return done(request, f"{partner.email} {'no longer follows' if removed else 'did not follow'} {rec.name}")


@viewing
def message_page(request):
    """A message's recipients, read-only (when no plugin offers an envelope screen)."""
    msg = chatter.get_message(host_of(request), request.path_params["message_id"])
    return render(request, "message.html", {"msg": msg, "rows": chatter.notification_rows(msg),
                                            "envelope": chatter.envelope(msg)})


@viewing
def attachment_download(request):
    host = host_of(request)
    att = attachments.get(host, request.path_params["attachment_id"])
    return download(attachments.content(host, att), att.name)


# --- scheduled actions ------------------------------------------------------------------------

def cron_list(request):
    host = host_of(request)
    return render(request, "cron.html", {"rows": scheduler.listing(host), "run_warning": RUN_WARNING,
                                         "floor": scheduler.FLOOR_MINUTES,
                                         "recommended": scheduler.RECOMMENDED_MINUTES})


@acting
def cron_set_interval(request):
    host = host_of(request)
    name = form_value(request, "name")
    number, unit = form_value(request, "number"), form_value(request, "unit", "minutes")
    action, warning = scheduler.set_interval(host, name, f"{number}{unit}")
    audit(request, f"set the interval of {action.name!r} to {action.interval_number} {action.interval_type}")
    return done(request, f"{action.name}: every {action.interval_number} {action.interval_type}"
                + (f". Warning: {warning}." if warning else ""))


@acting
def cron_run(request):
    host = host_of(request)
    name = form_value(request, "name")
    audit(request, f"ran {name!r} by hand")
    result = scheduler.run_by_hand(host, name)
    if result["error"]:
        return done(request, f"{result['name']} failed: {result['error']}")
    return done(request, f"{result['name']}: done {result['done']}, remaining {result['remaining']} in "
                         f"{result['duration']:.2f}s. {RUN_WARNING}")


@acting
def cron_active(request):
    host = host_of(request)
    name, active = form_value(request, "name"), form_value(request, "active") == "1"
    action = scheduler.set_active(host, name, active)
    audit(request, f"{'enabled' if active else 'disabled'} {action.name!r}")
    return done(request, f"{action.name}: {'active' if active else 'inactive'}")


# --- doctor -----------------------------------------------------------------------------------
# The page shows the last run (the CLI's or the console's) with its age: the DNS probes wait
# on the network, a page must not. "Run checks now" runs them all afresh.
STALE_AFTER = dt.timedelta(hours=1)


def age_words(delta: dt.timedelta) -> str:
    """"just now", "5 minutes ago", "3 hours ago", "2 days ago"."""
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


def doctor_page(request):
    host = host_of(request)
    run = doctor.last_run(host)
    context = {"run": run, "results": [], "summary": None, "age": None, "stale": False}
    if run is not None:
        age = host.clock.now() - run.taken_at
        context.update(results=run.results, summary=doctor.summary(run.results), age=age_words(age),
                       stale=age > STALE_AFTER)
    return render(request, "doctor.html", context)


@acting
def doctor_run(request):
    host = host_of(request)
    results = doctor.run_checks(host)  # outside any transaction: DNS and SMTP probes
    who = request.scope["state"]["operator"].email
    doctor.save_run(host, results, f"{who} (console)")
    counts = doctor.summary(results)
    words = f"{counts['fail']} failed, {counts['warn']} warning(s), {counts['ok']} ok"
    audit(request, f"ran the doctor checks: {words}")
    return done(request, f"Checks run: {words}.", to="/doctor/")


def register_all(register):
    """The core's screens, registered like any plugin's."""
    register("/records", [
        Route("/", record_list, methods=["GET"]),
        Route("/message/{message_id:int}", message_page, methods=["GET"]),
        Route("/attachment/{attachment_id:int}", attachment_download, methods=["GET"]),
        Route("/{model}/{res_id}", record_page, methods=["GET"]),
        Route("/{model}/{res_id}/follow", record_follow, methods=["POST"]),
        Route("/{model}/{res_id}/unfollow", record_unfollow, methods=["POST"]),
    ], nav="Records")
    register("/cron", [
        Route("/", cron_list, methods=["GET"]),
        Route("/interval", cron_set_interval, methods=["POST"]),
        Route("/run", cron_run, methods=["POST"]),
        Route("/active", cron_active, methods=["POST"]),
    ], nav="Scheduled actions")
    register("/doctor", [Route("/", doctor_page, methods=["GET"]),
                         Route("/run", doctor_run, methods=["POST"])], nav="Doctor")
