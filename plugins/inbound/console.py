"""inbound's console screen: the decision log (why was this mail, or was it not, received?)
searchable by sender, recipient, verdict and time, each decision with its reason, and the
original of an accepted mail to download. The same `decisions.search` and
`decisions.original_of` as `postroom inbound log` and `inbound export`."""
import datetime as dt
import os

from starlette.routing import Route

from postroom.core.clock import UTC
from postroom.core.console.frame import download, render, viewing
from postroom.core.console.paging import page_number, paginate
from postroom.core.web import host_of

from . import decisions

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")
VERDICTS = ("accepted", "refused", "tempfail")


def _day(text: str):
    """A YYYY-MM-DD from the form as the UTC midnight starting it, or None."""
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC) if text else None
    except ValueError:
        return None


def log_page(request):
    host = host_of(request)
    q = request.query_params
    f = {"sender": q.get("sender", "").strip()[:320], "recipient": q.get("recipient", "").strip()[:320],
         "verdict": q.get("verdict", "") if q.get("verdict", "") in VERDICTS else "",
         "since": q.get("since", "")[:10], "until": q.get("until", "")[:10]}
    until = _day(f["until"])
    query = decisions.search(host, sender=f["sender"] or None, recipient=f["recipient"] or None,
                             verdict=f["verdict"] or None, since=_day(f["since"]),
                             until=until + dt.timedelta(days=1) if until else None)
    page = paginate(query, page_number(request))
    page.rows = [decisions.as_row(d) for d in page.rows]
    return render(request, "inbound/log.html", {"page": page, "f": f, "verdicts": VERDICTS})


@viewing
def original(request):
    decision_id = request.path_params["decision_id"]
    row = decisions.original_of(host_of(request), decision_id)
    return download(bytes(row.content), f"inbound-{decision_id}.eml", "message/rfc822")


def register(register):
    register("/inbound", [
        Route("/", log_page, methods=["GET"]),
        Route("/{decision_id:int}/original", original, methods=["GET"]),
    ], nav="Inbound log", templates=TEMPLATES)
