"""Housekeeping for `postroom vacuum` / the auto-vacuum action, and `postroom doctor` checks."""
import datetime as dt

from postroom.core import vacuum as core_vacuum
from postroom.core.doctor import Check

from .feedback import BOUNCE_WINDOW
from .models import CANCELED, BounceEvent, Trace
from .process import head_campaign

TRACE_RETENTION = dt.timedelta(days=182)   # six months
HEAD_WARN_AFTER = dt.timedelta(days=1)


def vacuum(host, batch_size: int, dry_run: bool) -> dict:
    """Canceled traces older than six months, and bounce evidence older than the blacklist
    rule's window. The blacklist itself is never vacuumed."""
    now = host.clock.now()
    result = core_vacuum.sweep(host, "mail_marketing", {
        "canceled_traces": (Trace, [(Trace.status == CANCELED) & (Trace.created_at < now - TRACE_RETENTION)]),
        "bounce_records": (BounceEvent, [BounceEvent.bounced_at < now - BOUNCE_WINDOW]),
    }, batch_size, dry_run)
    if any(result["removed"].values()):
        host.log.info("mail_marketing vacuum%s: %s canceled traces, %s old bounce records",
                      " (dry run)" if dry_run else "", result["removed"]["canceled_traces"],
                      result["removed"]["bounce_records"])
    return result


def doctor_checks(host) -> list:
    return _queue_head_checks(host) + [_one_click_check(host)]


def _one_click_check(host) -> Check:
    """RFC 8058 one-click unsubscribe needs an https link the world reaches (public_url)."""
    from .mails import public_url
    base = public_url(host)
    if base is None:
        return Check("campaigns.one_click", "warn", "public_url is not set: campaign mail offers only a "
                     "mailto unsubscribe, no RFC 8058 one-click link (Gmail and Yahoo require one for "
                     "bulk mail)", "serve the HTTP service behind a TLS proxy and set public_url = https://...")
    if not base.startswith("https://"):
        return Check("campaigns.one_click", "warn", f"public_url {base} is not https: receivers ignore a "
                     f"one-click unsubscribe link that is not (RFC 8058)",
                     "put a TLS-terminating proxy in front and set public_url to its https:// address")
    return Check("campaigns.one_click", "ok", f"campaign mail carries one-click unsubscribe links to {base}/u/")


def _queue_head_checks(host) -> list:
    """Is a campaign holding the marketing queue's head for more than a day?"""
    try:
        head = head_campaign(host)
    except Exception as exc:  # noqa: BLE001 - a check reports, never raises
        return [Check("campaigns.queue_head", "fail", f"cannot read the campaign queue: {exc}",
                      "check the database with: postroom campaign queue")]
    if head is None:
        return [Check("campaigns.queue_head", "ok", "no campaign is waiting in the marketing queue")]
    since = head.head_since or head.queued_at or head.created_at
    held = host.clock.now() - since
    hours = held.total_seconds() / 3600
    if held <= HEAD_WARN_AFTER:
        return [Check("campaigns.queue_head", "ok",
                      f"campaign {head.id} ({head.state}) has been at the head for {hours:.1f} h")]
    error = f"; last error: {head.last_error}" if head.last_error else ""
    finding = (f"campaign {head.id} {head.subject!r} ({head.state}) has been at the head of the "
               f"marketing queue for {hours:.0f} h, holding back the campaigns behind it{error}")
    if head.state == "in_queue":
        remedy = f"cancel it with postroom campaign cancel {head.id} to let the others go"
    else:
        remedy = (f"see postroom campaign queue and the log for campaign {head.id}; a sending campaign "
                  f"finishes on its own once its error is fixed")
    return [Check("campaigns.queue_head", "fail" if head.last_error else "warn", finding, remedy)]
