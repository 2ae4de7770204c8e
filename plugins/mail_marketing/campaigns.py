"""Campaigns: creating, queueing (send / schedule), cancelling, test copies, statistics."""
import datetime as dt
import types

import peewee as pw

from postroom.core import attachments, emails, records, scheduler, services
from postroom.core.clock import parse_when
from postroom.core.errors import Conflict, InvalidInput, NotFound

from . import mails, rendering, tracking
from .lists import get_list
from .models import Campaign, CampaignList, Contact, MailingList, Trace

ACTION_CODE = "mail_marketing.process"
RECORD_TYPE = "mailing.campaign"
QUEUED = ("in_queue", "sending")


def default_from(host) -> str:
    return host.config.get("marketing_email_from") or f"{host.config.get('catchall')}@{host.config.primary_domain}"


def read_body(path: str) -> str:
    """The HTML body from a file; refuses what is not UTF-8 or is empty."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise InvalidInput(f"cannot read the body file {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the body file {path} is not valid UTF-8 (byte {exc.start}); "
                           f"save it as UTF-8 and try again") from None
    if not text.strip():
        raise InvalidInput(f"the body file {path} is empty")
    return text


def create_campaign(host, subject: str, body_html: str, list_names, email_from: str | None = None,
                    files=(), track: str | None = None) -> Campaign:
    """A draft campaign to the union of the named lists, with its own chatter record.
    `files`: attachments every recipient gets (paths or `(name, bytes, mimetype)`), checked
    before anything is written and stored once whatever the number of recipients.
    `track`: "opens", "clicks" or both (comma-separated); off by default, and it needs
    `public_url` (the links must reach the HTTP service)."""
    track = tracking.parse_track(track)
    if track and mails.public_url(host) is None:
        raise InvalidInput("--track needs public_url in the config: the tracking links must "
                           "reach Postroom's HTTP service")
    subject = (subject or "").strip()
    if not subject:
        raise InvalidInput("the subject is empty")
    emails.check_header_text("subject", subject)
    names = [n for n in dict.fromkeys(list_names or ())]
    if not names:
        raise InvalidInput("name at least one list with --list NAME")
    email_from = (email_from or default_from(host)).strip()
    emails.split_address(email_from)
    lists = [get_list(host, n) for n in names]
    # Templates are checked against a real contact before anything is written.
    draft = types.SimpleNamespace(id=0, subject=subject, body_html=body_html, track=None)
    rendering.check(host, draft, subject, body_html, [m.id for m in lists])
    ready = attachments.prepare(host, files)
    now = host.clock.now()
    with host.transaction():
        record = records.create_record(host, RECORD_TYPE, subject)
        campaign = Campaign.create(subject=subject, body_html=body_html, email_from=email_from,
                                   state="draft", record_id=record.id, created_at=now, track=track)
        CampaignList.insert_many([{"campaign": campaign.id, "mailing_list": m.id} for m in lists]).execute()
        attachments.store(host, ready, mails.ATTACHMENT_HOLDER, campaign.id)
    host.log.info("campaign %s created: %r to lists %s", campaign.id, subject, ", ".join(names))
    return campaign


def get_campaign(host, campaign_id) -> Campaign:
    cid = records.parse_id(campaign_id, "campaign")
    campaign = Campaign.get_or_none(Campaign.id == cid)
    if campaign is None:
        raise NotFound(f"no campaign with id {cid}; see: postroom campaign list")
    return campaign


def list_ids(campaign) -> list[int]:
    return [i for (i,) in CampaignList.select(CampaignList.mailing_list)
            .where(CampaignList.campaign == campaign).tuples()]


def _queue(host, campaign, at: dt.datetime | None) -> None:
    if campaign.state != "draft":
        raise Conflict(f"campaign {campaign.id} is {campaign.state}, not draft: only a draft campaign "
                       f"can be sent or scheduled" + (" (use retry-failed to re-send its errors)"
                                                     if campaign.state == "done" else ""))
    now = host.clock.now()
    with host.transaction():
        changed = (Campaign.update(state="in_queue", scheduled_at=at, queued_at=now, head_since=None,
                                   last_error=None, last_error_at=None, error_count=0)
                   .where((Campaign.id == campaign.id) & (Campaign.state == "draft")).execute())
        if not changed:
            raise Conflict(f"campaign {campaign.id} changed meanwhile; try again")
        # The daily action would get there eventually; the trigger makes it now or on time.
        scheduler.trigger(host, ACTION_CODE, max(at, now) if at else now)


def send(host, campaign_id) -> Campaign:
    """Queue a draft campaign now; the process queue is triggered at once."""
    campaign = get_campaign(host, campaign_id)
    _queue(host, campaign, None)
    host.log.info("campaign %s queued to send now", campaign.id)
    return get_campaign(host, campaign.id)


def schedule(host, campaign_id, at_text: str) -> tuple[Campaign, str | None]:
    """Queue a draft campaign for a time; a past time goes out at the next run. Returns
    (campaign, warning or None)."""
    campaign = get_campaign(host, campaign_id)
    at = parse_when(at_text)
    warning = None
    if at <= host.clock.now():
        warning = (f"{at:%Y-%m-%d %H:%M} UTC is in the past: the campaign goes out at the next "
                   f"run of the process queue")
    _queue(host, campaign, at)
    host.log.info("campaign %s scheduled for %s", campaign.id, at.isoformat())
    return get_campaign(host, campaign.id), warning


def cancel(host, campaign_id) -> Campaign:
    """Take an `in_queue` campaign out of the queue, back to draft."""
    campaign = get_campaign(host, campaign_id)
    if campaign.state == "sending":
        done = Trace.select().where(Trace.campaign == campaign).count()
        raise Conflict(f"campaign {campaign.id} is sending ({done} recipients already processed): "
                       f"a campaign that started sending cannot be canceled, or its recipients "
                       f"would be half-mailed; it finishes on its own")
    if campaign.state != "in_queue":
        raise Conflict(f"campaign {campaign.id} is {campaign.state}: only a campaign in the queue "
                       f"(in_queue) can be canceled")
    with host.transaction():
        changed = (Campaign.update(state="draft", scheduled_at=None, queued_at=None, head_since=None)
                   .where((Campaign.id == campaign.id) & (Campaign.state == "in_queue")).execute())
        if changed and Campaign.select().where(Campaign.state.in_(QUEUED)).exists():
            # The campaigns it held back go now, not at the next daily run.
            scheduler.trigger(host, ACTION_CODE)
    if not changed:
        raise Conflict(f"campaign {campaign.id} started sending meanwhile; it can no longer be canceled")
    host.log.info("campaign %s canceled: back to draft, out of the queue", campaign.id)
    return get_campaign(host, campaign.id)


def send_test(host, campaign_id, address: str) -> str:
    """One copy to ADDRESS, sent at once; no trace, nothing counted as sent. Returns the
    Message-Id of the copy."""
    campaign = get_campaign(host, campaign_id)
    _, addr = emails.split_address(address)
    # The copy is rendered for the contact with that address, else the lists' first one.
    contact = rendering.sample_contact(list_ids(campaign), addr)
    compiled = rendering.compile_campaign(host, campaign)
    rendered = rendering.render(host, compiled, campaign, contact["name"], contact["email"],
                                mails.unsubscribe_url(host, None, campaign.id))
    mail = mails.build(host, campaign, addr, name=None, trace_id=None, test=True, rendered=rendered)
    with host.transaction():
        services.mail(host).enqueue([mail])
    host.log.info("campaign %s: test copy to %s msgid=%s", campaign.id, addr, mail["message_id"])
    return mail["message_id"]


def remaining_recipients(campaign) -> int:
    """Contacts of the campaign's lists not turned into traces yet."""
    if campaign.state == "done":
        return 0
    ids = list_ids(campaign)
    if not ids:
        return 0
    return (Contact.select().where(Contact.mailing_list.in_(ids) & (Contact.id > campaign.cursor)).count())


def stats(campaign) -> dict:
    """Counts and ratios of one campaign, from one aggregate query over its traces."""
    rows = (Trace.select(Trace.status, Trace.cancel_reason, pw.fn.COUNT(Trace.id),
                         pw.fn.COUNT(Trace.sent_at), pw.fn.COUNT(Trace.opened_at), pw.fn.COUNT(Trace.clicked_at))
            .where(Trace.campaign == campaign).group_by(Trace.status, Trace.cancel_reason).tuples())
    counts = {s: 0 for s in ("outgoing", "sent", "error", "bounce", "reply", "canceled")}
    reasons, delivered, traced, opened, clicked = {}, 0, 0, 0, 0
    for status, reason, n, with_sent_at, with_open, with_click in rows:
        counts[status] = counts.get(status, 0) + n
        traced += n
        delivered += with_sent_at
        opened += with_open
        clicked += with_click
        if status == "canceled":
            reasons[reason or "unknown"] = reasons.get(reason or "unknown", 0) + n
    pending = remaining_recipients(campaign)
    expected = traced + pending

    def ratio(part, whole):
        return round(100.0 * part / whole, 1) if whole else 0.0
    return {"expected": expected, "pending": pending, "outgoing": counts["outgoing"], "sent": delivered,
            "canceled": counts["canceled"], "canceled_by_reason": reasons, "error": counts["error"],
            "bounced": counts["bounce"], "replied": counts["reply"],
            "sent_ratio": ratio(delivered, expected), "canceled_ratio": ratio(counts["canceled"], expected),
            "error_ratio": ratio(counts["error"], expected), "bounced_ratio": ratio(counts["bounce"], delivered),
            "replied_ratio": ratio(counts["reply"], delivered),
            "opened": opened, "opened_ratio": ratio(opened, delivered),
            "clicked": clicked, "clicked_ratio": ratio(clicked, delivered)}


def describe(host, campaign) -> dict:
    names = [m.name for m in MailingList.select(MailingList.name).join(CampaignList)
             .where(CampaignList.campaign == campaign).order_by(MailingList.name)]
    data = {"id": campaign.id, "subject": campaign.subject, "state": campaign.state,
            "email_from": campaign.email_from, "lists": names, "record": f"{RECORD_TYPE},{campaign.record_id}",
            "created_at": campaign.created_at, "scheduled_at": campaign.scheduled_at,
            "started_at": campaign.started_at, "done_at": campaign.done_at,
            "last_error": campaign.last_error, "track": campaign.track or "",
            "attachments": attachments.describe(attachments.of(mails.ATTACHMENT_HOLDER, campaign.id))}
    data.update(stats(campaign))
    return data


def campaign_rows() -> list[dict]:
    counts = dict(Trace.select(Trace.campaign, pw.fn.COUNT(Trace.sent_at)).group_by(Trace.campaign).tuples())
    return [{"id": c.id, "subject": c.subject, "state": c.state, "created_at": c.created_at,
             "scheduled_at": c.scheduled_at, "sent": counts.get(c.id, 0)}
            for c in Campaign.select().order_by(Campaign.created_at, Campaign.id)]


def retry_failed(host, campaign_id) -> int:
    """Re-queue only the recipients whose trace is `error`; returns how many."""
    campaign = get_campaign(host, campaign_id)
    if campaign.state not in ("sending", "done"):
        raise Conflict(f"campaign {campaign.id} is {campaign.state}: it has not sent anything to retry")
    return mails.requeue_errors(host, campaign)
