"""What comes back about campaign mails: sent, failed, bounced, replied, unsubscribed; and
the automatic blacklist rule (5 bounces within 13 weeks, spread over more than a week)."""
import datetime as dt

import peewee as pw

from postroom.core import emails, tokens
from postroom.core.db import chunks, update_ids

from .mails import UNSUBSCRIBE_PURPOSE, trace_of, unsubscribe_local
from .models import Blacklist, BounceEvent, Trace

BOUNCE_LIMIT = 5
BOUNCE_WINDOW = dt.timedelta(weeks=13)
BOUNCE_SPAN = dt.timedelta(weeks=1)


def _trace_ids(mails) -> list[int]:
    return [i for i in (trace_of(m.get("ref")) for m in mails) if i is not None]


def mails_sent(host, mails) -> None:
    """Outgoing traces of the sent mails → `sent`, one UPDATE per chunk (`core.db.update_ids`)."""
    ids = _trace_ids(mails)
    if not ids:
        return
    now = host.clock.now()
    with host.transaction():
        update_ids(Trace, ids, {Trace.status: "sent", Trace.sent_at: now, Trace.updated_at: now},
                   '"status" = {p}', ("outgoing",))


def mails_failed(host, mails) -> None:
    """Permanently failed mails → trace `error` with the failure type and reason (one UPDATE
    with CASE per chunk). A temporary failure leaves the trace `outgoing`: it is retried."""
    failed = [(trace_of(m.get("ref")), m) for m in mails if m.get("permanent")]
    failed = [(i, m) for i, m in failed if i is not None]
    if not failed:
        return
    now = host.clock.now()
    with host.transaction():
        for part in chunks(failed):
            ftype = pw.Case(Trace.id, [(i, m.get("failure_type") or "unknown") for i, m in part])
            reason = pw.Case(Trace.id, [(i, (m.get("failure_reason") or "")[:2000]) for i, m in part])
            (Trace.update(status="error", failure_type=ftype, failure_reason=reason, updated_at=now)
             .where(Trace.id.in_([i for i, _ in part]) & (Trace.status == "outgoing")).execute())


def bounce_received(host, bounce: dict) -> None:
    """Mark the campaign trace the bounce is tied to, remember the bounce, and blacklist the
    address once the rule is met. Runs inside the bounce's transaction.

    Only evidence tied to a mail we sent counts, once per mail: a trace named by its token
    (its own recipient only: other addresses in the report are ignored), or by its
    Message-Id for an address it was sent to; the bounce counts when the trace turns
    `bounce` (a replayed report finds it turned already). A refusal about us rather than
    the address (`counts` false: 5.7.x, spam, DMARC) fails the trace without counting.
    A chatter mail's bounce (`notification_id`) is counted as the inbound plugin recorded it."""
    now = host.clock.now()
    reason = (bounce.get("reason") or "")[:2000]
    counts = bounce.get("counts", True)
    named = {emails.normalize(a) for a in (bounce.get("addresses") or [bounce.get("email")])
             if a and emails.is_valid(a)}
    trace_id = trace_of(bounce.get("token"))
    fields = (Trace.id, Trace.email_normalized)
    trace = None
    if trace_id is not None:
        trace = Trace.select(*fields).where(Trace.id == trace_id).first()
    elif bounce.get("message_id") and named and not bounce.get("notification_id"):
        trace = (Trace.select(*fields).where((Trace.message_id == bounce["message_id"])
                                             & Trace.email_normalized.in_(sorted(named))).first())
    if trace is not None:
        ignored = sorted(named - {trace.email_normalized})
        if ignored:
            host.log.info("bounce for trace %s (%s): other addresses in the report ignored: %s",
                          trace.id, trace.email_normalized, ", ".join(ignored))
        before = ("outgoing", "sent", "error") if counts else ("outgoing", "sent")
        changed = (Trace.update(status="bounce" if counts else "error",
                                failure_type="bounce" if counts else "policy", failure_reason=reason,
                                updated_at=now, sent_at=pw.fn.COALESCE(Trace.sent_at, now))
                   .where((Trace.id == trace.id) & Trace.status.in_(before)).execute())
        if changed and counts and trace.email_normalized:
            _count_bounce(host, trace.email_normalized, now, reason)
        return
    address = bounce.get("email")
    if bounce.get("notification_id") and counts and address and emails.is_valid(address):
        _count_bounce(host, emails.normalize(address), now, reason)


def _count_bounce(host, norm: str, now, reason: str) -> None:
    BounceEvent.insert(email_normalized=norm, bounced_at=now, reason=reason).execute()
    apply_blacklist_rule(host, norm)


def apply_blacklist_rule(host, norm: str) -> bool:
    """Blacklist `norm` when it bounced BOUNCE_LIMIT times within BOUNCE_WINDOW and those
    bounces span more than BOUNCE_SPAN (one bad day of a mailbox does not count)."""
    now = host.clock.now()
    count, first = (BounceEvent.select(pw.fn.COUNT(BounceEvent.id), pw.fn.MIN(BounceEvent.bounced_at))
                    .where((BounceEvent.email_normalized == norm)
                           & (BounceEvent.bounced_at >= now - BOUNCE_WINDOW)).tuples().first())
    if not count or count < BOUNCE_LIMIT:
        return False
    first = BounceEvent.bounced_at.python_value(first) if not isinstance(first, dt.datetime) else first
    from postroom.core.clock import aware
    first = aware(first)
    if now - first <= BOUNCE_SPAN:
        return False
    reason = (f"automatic: bounced {count} times between {first:%Y-%m-%d} and {now:%Y-%m-%d} "
              f"(rule: {BOUNCE_LIMIT} bounces within 13 weeks over more than a week)")
    added = (Blacklist.insert(email_normalized=norm, reason=reason, created_at=now)
             .on_conflict_ignore().as_rowcount().execute())
    if added:
        host.log.warning("blacklist: %s added automatically: %s", norm, reason)
    return bool(added)


def reply_record(host, references, dry_run: bool = False):
    """The campaign Record a reply answers (its trace then turns `reply`), or None when
    none of `references` is a campaign mail's Message-Id."""
    ids = [r for r in (references or []) if r]
    if not ids:
        return None
    from postroom.core.models import Record
    from .models import Campaign
    trace = (Trace.select(Trace.id, Trace.campaign).where(Trace.message_id.in_(ids)).first())
    if trace is None:
        return None
    campaign = Campaign.get_or_none(Campaign.id == trace.campaign_id)
    record = Record.get_or_none(Record.id == campaign.record_id) if campaign and campaign.record_id else None
    if not dry_run:
        reply_received(host, ids)
    return record


def reply_received(host, references) -> bool:
    """Mark the trace of the campaign mail a reply answers as `reply`; True if one matched."""
    ids = [r for r in (references or []) if r]
    if not ids:
        return False
    now = host.clock.now()
    with host.transaction():
        changed = (Trace.update(status="reply", updated_at=now, sent_at=pw.fn.COALESCE(Trace.sent_at, now))
                   .where(Trace.message_id.in_(ids) & Trace.status.in_(("outgoing", "sent")))
                   .execute())
        if not changed:
            changed = Trace.select().where(Trace.message_id.in_(ids)).exists()
    return bool(changed)


# --- unsubscribe through the inbound gateway ------------------------------------------

def recipient_handler(host, local_part: str, domain: str):
    """The handler for `unsubscribe+<token>@domain`, or None for other addresses and for a
    forged or mangled token (the gateway then refuses it at RCPT with 550 5.1.1). Reads only."""
    base, plus, token = (local_part or "").partition("+")
    if not plus or base.lower() != unsubscribe_local(host):
        return None
    value = tokens.verify(host, UNSUBSCRIBE_PURPOSE, token)
    if value is None:
        host.log.info("unsubscribe: forged or mangled token in %s@%s refused", local_part, domain)
        return None  # the gateway refuses it at RCPT like any unknown mailbox (550 5.1.1)
    return lambda host_, envelope_from, recipient, message: unsubscribe(host_ or host, value)


def unsubscribe(host, value: str):
    """Opt the trace's address out of the lists of its campaign. Returns (code, text)."""
    from .optout import opt_out
    if opt_out(host, value, "List-Unsubscribe mailto") == "test":
        return 250, "2.0.0 test copy: nobody to unsubscribe"
    return 250, "2.0.0 unsubscribed"
