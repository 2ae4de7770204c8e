"""Opting a campaign recipient out of (and back into) the campaign's lists, from a signed
unsubscribe value (`t<trace id>`, or `c<campaign id>` for a test copy). Used by the
mailto unsubscribe (inbound gateway) and the one-click web link alike."""
from postroom.core import tokens

from .mails import UNSUBSCRIBE_PURPOSE
from .models import Campaign, CampaignList, Contact, Trace

RESUBSCRIBE_PURPOSE = "mail_marketing.resubscribe"


def trace_of_value(value: str | None):
    """The Trace a genuine unsubscribe value names, or None (a test copy, or gone)."""
    if not value or not value.startswith("t") or not value[1:].isdigit():
        return None
    return Trace.get_or_none(Trace.id == int(value[1:]))


def verified(host, token: str, purpose: str = UNSUBSCRIBE_PURPOSE) -> str | None:
    """The value inside a genuine token of `purpose`, else None (forged or mangled)."""
    if not token or len(token) > 64:
        return None
    return tokens.verify(host, purpose, token)


def resubscribe_token(host, value: str) -> str:
    """Signed like the unsubscribe token, for its own purpose: an unsubscribe link cannot
    be replayed to resubscribe, nor the other way round."""
    return tokens.sign(host, RESUBSCRIBE_PURPOSE, value)


def _set_opt_out(host, trace, opt_out: bool) -> int:
    now = host.clock.now()
    with host.transaction():
        lists = CampaignList.select(CampaignList.mailing_list).where(CampaignList.campaign == trace.campaign_id)
        return (Contact.update(opt_out=opt_out, opt_out_at=now if opt_out else None)
                .where((Contact.email_normalized == trace.email_normalized)
                       & Contact.mailing_list.in_(lists) & (Contact.opt_out == (not opt_out))).execute())


def opt_out(host, value: str, via: str) -> str:
    """Opt the value's address out of its campaign's lists: 'unsubscribed', or 'test' for a
    test copy (nobody to unsubscribe). Repeating it changes nothing and says the same."""
    trace = trace_of_value(value)
    if trace is None or not trace.email_normalized:
        return "test" if value.startswith("c") else "unsubscribed"
    changed = _set_opt_out(host, trace, True)
    host.log.info("unsubscribe: %s opted out of campaign %s's lists (%s contacts) via %s",
                  trace.email_normalized, trace.campaign_id, changed, via)
    return "unsubscribed"


def resubscribe(host, value: str) -> int:
    """Undo `opt_out` for the value's address on its campaign's lists (the blacklist, the
    operator's own refusal, stays). Returns how many contacts changed."""
    trace = trace_of_value(value)
    if trace is None or not trace.email_normalized:
        return 0
    changed = _set_opt_out(host, trace, False)
    host.log.info("unsubscribe: %s resubscribed to campaign %s's lists (%s contacts) via the web page",
                  trace.email_normalized, trace.campaign_id, changed)
    return changed


def describe(value: str) -> dict:
    """What the page shows: the address and the campaign's subject (None for a test copy)."""
    trace = trace_of_value(value)
    if trace is None:
        return {"email": None, "subject": None, "subscribed": False}
    campaign = Campaign.get_or_none(Campaign.id == trace.campaign_id)
    lists = CampaignList.select(CampaignList.mailing_list).where(CampaignList.campaign == trace.campaign_id)
    subscribed = (Contact.select().where((Contact.email_normalized == trace.email_normalized)
                                         & Contact.mailing_list.in_(lists) & ~Contact.opt_out).exists())
    return {"email": trace.email, "subject": campaign.subject if campaign else None, "subscribed": subscribed}
