"""The mail of one campaign recipient: headers, signed unsubscribe address and link, enqueueing."""
from postroom.core import attachments, chatter, services, templates, tokens
from postroom.core.db import CHUNK, chunks
from postroom.core.models import Record

from . import rendering
from .models import Trace

UNSUBSCRIBE_PURPOSE = "mail_marketing.unsubscribe"


def trace_ref(trace_id: int) -> str:
    """The `ref` a campaign mail carries through the queue (also its bounce value)."""
    return f"mt{int(trace_id)}"


def trace_of(ref: str | None) -> int | None:
    """The trace id inside a ref or bounce value made by `trace_ref`, else None."""
    if ref and ref.startswith("mt") and ref[2:].isdigit():
        return int(ref[2:])
    return None


def unsubscribe_local(host) -> str:
    return (host.config.get("marketing_unsubscribe") or "unsubscribe").lower()


def unsubscribe_token(host, trace_id: int | None, campaign_id: int) -> str:
    """`<value>-<sig>`: `t<trace id>` for a recipient (one trace is one recipient of one
    campaign), `c<campaign id>` for a test copy (which unsubscribes nobody). Signed for this
    purpose only, so neither a bounce token nor a guessed value can opt anyone out."""
    return tokens.sign(host, UNSUBSCRIBE_PURPOSE, _token_value(trace_id, campaign_id))


def _token_value(trace_id: int | None, campaign_id: int) -> str:
    return f"t{int(trace_id)}" if trace_id is not None else f"c{int(campaign_id)}"


def public_url(host) -> str | None:
    """The configured `public_url` without a trailing slash, or None: links in mail need an
    address the world reaches, so without one mail carries no web links."""
    return (host.config.get("public_url") or "").strip().rstrip("/") or None


class Unsubscribe:
    """The configuration's share of every recipient's unsubscribe address and link
    (`public_url`, the local part, the primary domain), read once per batch rather than
    three times per recipient, and the purpose's keyed signer; `token` makes a recipient's
    `unsubscribe_token`, `headers` and `url` add it."""

    def __init__(self, host):
        self.base = public_url(host)
        self.mailto_head = f"mailto:{unsubscribe_local(host)}+"
        self.mailto_tail = f"@{host.config.primary_domain}?subject=unsubscribe"
        self._sign = tokens.signer(host, UNSUBSCRIBE_PURPOSE)

    def token(self, trace_id: int | None, campaign_id: int) -> str:
        """`unsubscribe_token(host, trace_id, campaign_id)`, signed with the batch's signer."""
        return self._sign(_token_value(trace_id, campaign_id))

    def headers(self, token: str) -> dict:
        """List-Unsubscribe (web link first, then mailto) and, with a web link, RFC 8058's
        List-Unsubscribe-Post that lets a mailbox provider unsubscribe in one click: a new
        dict on each call."""
        mailto = f"<{self.mailto_head}{token}{self.mailto_tail}>"
        if self.base is None:
            return {"List-Unsubscribe": mailto}
        return {"List-Unsubscribe": f"<{self.base}/u/{token}>, {mailto}",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}

    def url(self, token: str) -> str:
        if self.base is not None:
            return f"{self.base}/u/{token}"
        return f"{self.mailto_head}{token}{self.mailto_tail}"


def unsubscribe_url(host, trace_id: int | None, campaign_id: int, token: str | None = None,
                    links: Unsubscribe | None = None) -> str:
    """What a template's `unsubscribe_url` is: the signed web link when `public_url` is
    set, else the signed mailto address."""
    return (links or Unsubscribe(host)).url(token or unsubscribe_token(host, trace_id, campaign_id))


def body_for(host, campaign, trace_id: int | None, body: str | None = None,
             links: Unsubscribe | None = None) -> str:
    """The recipient's body (`body`, rendered; default the campaign's), with tracking links
    and pixel for a real recipient of a tracked campaign (never for a test copy)."""
    body = campaign.body_html if body is None else body
    base = links.base if links is not None else public_url(host)
    if not campaign.track or trace_id is None or base is None:
        return body
    from .tracking import personalise
    return personalise(host, campaign, trace_id, base, body)


def campaign_record(campaign):
    return Record.get_or_none(Record.id == campaign.record_id) if campaign.record_id else None


ATTACHMENT_HOLDER = "mail_marketing.campaign"  # res_model of a campaign's attachments


def attachment_ids(campaign) -> list[int]:
    """The campaign's attachments; every recipient's mail carries the same ones."""
    return [a.id for a in attachments.of(ATTACHMENT_HOLDER, campaign.id)]


BULK_HEADERS = {"Precedence": "bulk", "Auto-Submitted": "auto-generated"}


def build(host, campaign, address: str, name: str | None, trace_id: int | None, test: bool = False,
          record=None, message_id: str | None = None, files: list[int] | None = None,
          rendered: tuple | None = None, token: str | None = None, links: Unsubscribe | None = None) -> dict:
    """The dict `mail.enqueue` takes for one recipient. The Message-Id names the campaign's
    record, so replies thread onto the campaign's chatter. `files`: the campaign's
    attachment ids (looked up when not given; a batch passes them once). `rendered`: the
    recipient's (subject, body, text) from `rendering.render`; `token`: their
    `unsubscribe_token` when already made (one HMAC per recipient, not two); `links`: the
    batch's `Unsubscribe`."""
    record = record if record is not None else campaign_record(campaign)
    files = attachment_ids(campaign) if files is None else files
    links = links if links is not None else Unsubscribe(host)
    headers = links.headers(token or links.token(trace_id, campaign.id))  # a dict of its own
    headers.update(BULK_HEADERS)
    return {
        "email_to": address,
        "recipient_name": name or None,  # To: "Ann Smith" <ann@…>
        "subject": rendered[0] if rendered else campaign.subject,
        "body_html": body_for(host, campaign, trace_id, rendered[1] if rendered else None, links),
        "body_text": rendered[2] if rendered else None,
        "email_from": campaign.email_from,
        "headers": headers,
        "ref": trace_ref(trace_id) if trace_id is not None else None,
        "message_id": message_id or chatter.make_message_id(host, record),
        "auto_delete": True,
        "attachment_ids": files or None,
        # A test copy is one person-to-person mail: it leaves at once, not with the queue.
        "bulk": not test,
    }


def enqueue_traces(host, campaign, traces: list[dict], record=None) -> None:
    """Enqueue the mails of outgoing traces (`id`, `email`, and `message_id` when the trace
    already has its own) and store the Message-Ids the traces lacked. Must run inside the
    caller's transaction: traces and mails land together."""
    if not traces:
        return
    record = record if record is not None else campaign_record(campaign)
    files = attachment_ids(campaign)
    batch, failed = [], []
    try:
        compiled = rendering.compile_campaign(host, campaign)
    except templates.TemplateFailure as exc:  # it compiled when created: a plugin's names changed
        compiled, failed = None, [(t["id"], str(exc)) for t in traces]
    links = Unsubscribe(host)
    campaign_id = campaign.id
    for t in traces if compiled is not None else ():
        trace_id, address, name = t["id"], t["email"], t.get("name")
        token = links.token(trace_id, campaign_id)
        try:
            rendered = rendering.render(host, compiled, campaign, name, address, links.url(token))
        except templates.TemplateFailure as exc:
            failed.append((trace_id, str(exc)))
            continue
        batch.append(build(host, campaign, address, name, trace_id, record=record,
                           message_id=t.get("message_id"), files=files, rendered=rendered, token=token,
                           links=links))
    _render_failed(host, campaign, failed)
    if failed:
        not_rendered = {i for i, _ in failed}
        traces = [t for t in traces if t["id"] not in not_rendered]
    if not batch:
        return
    host.hook.postroom_campaign_batch(host=host, campaign=campaign, mails=batch)
    services.mail(host).enqueue(batch)
    fresh = [m for m, t in zip(batch, traces) if m["message_id"] != t.get("message_id")]
    _store_message_ids(fresh)


def _render_failed(host, campaign, failed: list[tuple[int, str]]) -> None:
    """Traces whose template would not render become `error` with the reason (one UPDATE
    per chunk); the rest of the batch goes on."""
    import peewee as pw
    for part in chunks(failed):
        reasons = pw.Case(Trace.id, [(i, reason[:1000]) for i, reason in part])
        (Trace.update(status="error", failure_type="template", failure_reason=reasons,
                      updated_at=host.clock.now())
         .where(Trace.id.in_([i for i, _ in part])).execute())
    if failed:
        host.log.warning("campaign %s: %s recipient(s) not rendered, e.g. trace %s: %s", campaign.id,
                         len(failed), failed[0][0], failed[0][1])


def _store_message_ids(batch: list[dict]) -> None:
    """One UPDATE … CASE per chunk, so the statement count does not grow with the batch."""
    import peewee as pw
    for part in chunks(batch):
        ids = [trace_of(m["ref"]) for m in part]
        case = pw.Case(Trace.id, [(trace_of(m["ref"]), m["message_id"]) for m in part])
        Trace.update(message_id=case).where(Trace.id.in_(ids)).execute()


def requeue_errors(host, campaign) -> int:
    """Turn `error` traces back to `outgoing` and send their failed mails again, chunk by
    chunk, each chunk one transaction (a crash between chunks leaves the rest `error`,
    retryable). The mail service re-uses each failed mail (same row, same Message-Id); only
    a trace whose mail is gone gets a new one (with the trace's own Message-Id), so a
    recipient never has two live mails for one campaign."""
    total, last = 0, 0
    record = campaign_record(campaign)
    while True:
        with host.transaction():
            rows = list(Trace.select(Trace.id, Trace.email, Trace.message_id).where(
                (Trace.campaign == campaign) & (Trace.status == "error") & (Trace.id > last))
                .order_by(Trace.id).limit(CHUNK).dicts())
            if not rows:
                break
            ids = [r["id"] for r in rows]
            (Trace.update(status="outgoing", failure_type=None, failure_reason=None,
                          updated_at=host.clock.now())
             .where(Trace.id.in_(ids) & (Trace.status == "error")).execute())
            live = services.mail(host).retry([trace_ref(i) for i in ids])
            enqueue_traces(host, campaign, [r for r in rows if trace_ref(r["id"]) not in live], record=record)
            last = ids[-1]
            total += len(rows)
    if total:
        services.mail(host).trigger_queue()
    host.log.info("campaign %s: %s failed recipients re-queued", campaign.id, total)
    return total
