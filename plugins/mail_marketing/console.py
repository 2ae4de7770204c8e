"""mail_marketing's console screens: the marketing queue (head first, how long it has held
the head, cancel) and each campaign's counts, ratios and traces (filter, retry failed).

Every action calls the function its CLI command calls (`campaigns.cancel`,
`campaigns.retry_failed`); the lists come from `process.queue_rows` and `campaigns.describe`.
"""
import os

from starlette.routing import Route

from postroom.core.console.frame import acting, audit, done, render, viewing
from postroom.core.console.paging import page_number, paginate
from postroom.core.models import Record
from postroom.core.web import host_of

from . import campaigns, process
from .models import Trace

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")
TRACE_STATUSES = ("outgoing", "sent", "error", "bounce", "reply", "canceled")


def _record(campaign):
    return Record.get_or_none(Record.id == campaign.record_id)


def queue_page(request):
    host = host_of(request)
    return render(request, "mail_marketing/campaigns.html", {
        "queue": process.queue_rows(host), "campaigns": campaigns.campaign_rows()})


@viewing
def campaign_page(request):
    host = host_of(request)
    campaign = campaigns.get_campaign(host, request.path_params["campaign_id"])
    status = request.query_params.get("status", "")
    reason = request.query_params.get("reason", "").strip()[:16]
    query = Trace.select().where(Trace.campaign == campaign).order_by(Trace.id)
    if status in TRACE_STATUSES:
        query = query.where(Trace.status == status)
    if reason:
        query = query.where(Trace.cancel_reason == reason)
    return render(request, "mail_marketing/campaign.html", {
        "c": campaigns.describe(host, campaign), "page": paginate(query, page_number(request)),
        "status": status, "reason": reason, "statuses": TRACE_STATUSES})


@acting
def cancel(request):
    host = host_of(request)
    campaign = campaigns.cancel(host, request.path_params["campaign_id"])
    audit(request, f"canceled campaign {campaign.id} ({campaign.subject!r}): back to draft", _record(campaign))
    return done(request, f"Campaign {campaign.id} canceled: back to draft; the next in the queue can start.")


@acting
def retry_failed(request):
    host = host_of(request)
    count = campaigns.retry_failed(host, request.path_params["campaign_id"])
    campaign = campaigns.get_campaign(host, request.path_params["campaign_id"])
    audit(request, f"re-queued {count} failed recipient(s) of campaign {campaign.id}", _record(campaign))
    return done(request, f"{count} failed recipient(s) of campaign {campaign.id} queued again.")


def register(register):
    register("/campaigns", [
        Route("/", queue_page, methods=["GET"]),
        Route("/{campaign_id:int}", campaign_page, methods=["GET"]),
        Route("/{campaign_id:int}/cancel", cancel, methods=["POST"]),
        Route("/{campaign_id:int}/retry-failed", retry_failed, methods=["POST"]),
    ], nav="Campaigns", templates=TEMPLATES)
