"""Tables of the mail_marketing plugin: lists, contacts, blacklist, campaigns, traces."""
import peewee as pw

from postroom.core.db import UTCDateTimeField
from postroom.core.models import BaseModel


class MailingList(BaseModel):
    """A named list of contacts."""
    name = pw.CharField(max_length=128, unique=True)
    created_at = UTCDateTimeField()

    class Meta:
        table_name = "marketing_list"


class Contact(BaseModel):
    """One address on one list. Addresses are normalised, so a list holds each once;
    `opt_out` is per list (the global refusal is the blacklist)."""
    mailing_list = pw.ForeignKeyField(MailingList, on_delete="CASCADE", column_name="list_id")
    name = pw.CharField(max_length=256, default="")
    email = pw.CharField(max_length=320, null=True)
    email_normalized = pw.CharField(max_length=320, null=True)
    opt_out = pw.BooleanField(default=False)
    opt_out_at = UTCDateTimeField(null=True)
    created_at = UTCDateTimeField()

    class Meta:
        table_name = "marketing_contact"
        indexes = ((("mailing_list", "email_normalized"), True), (("email_normalized",), False))


class Blacklist(BaseModel):
    """Addresses that never receive a campaign, whatever the list. Never vacuumed."""
    email_normalized = pw.CharField(max_length=320, unique=True)
    reason = pw.TextField(default="")
    created_at = UTCDateTimeField()

    class Meta:
        table_name = "marketing_blacklist"


class BounceEvent(BaseModel):
    """One bounce of one address (from any mail, not only campaigns): the evidence the
    automatic blacklist rule counts."""
    email_normalized = pw.CharField(max_length=320)
    bounced_at = UTCDateTimeField()
    reason = pw.TextField(null=True)

    class Meta:
        table_name = "marketing_bounce"
        indexes = ((("email_normalized", "bounced_at"), False), (("bounced_at",), False))


class Campaign(BaseModel):
    """A mass mailing. `cursor` is the last contact id turned into a trace: the process
    queue resumes after it, so a crash neither skips nor repeats anyone."""
    subject = pw.CharField(max_length=998)
    body_html = pw.TextField()
    email_from = pw.CharField(max_length=512)
    state = pw.CharField(max_length=16, default="draft", index=True)
    record_id = pw.IntegerField(null=True)
    scheduled_at = UTCDateTimeField(null=True)
    queued_at = UTCDateTimeField(null=True)
    head_since = UTCDateTimeField(null=True)
    started_at = UTCDateTimeField(null=True)
    done_at = UTCDateTimeField(null=True)
    cursor = pw.IntegerField(default=0)
    last_error = pw.TextField(null=True)
    last_error_at = UTCDateTimeField(null=True)
    error_count = pw.IntegerField(default=0)
    created_at = UTCDateTimeField(index=True)
    track = pw.CharField(max_length=32, default="")  # "", "opens", "clicks" or "opens,clicks"

    class Meta:
        table_name = "marketing_campaign"


class CampaignList(BaseModel):
    campaign = pw.ForeignKeyField(Campaign, on_delete="CASCADE")
    mailing_list = pw.ForeignKeyField(MailingList, on_delete="CASCADE", column_name="list_id")

    class Meta:
        table_name = "marketing_campaign_list"
        indexes = ((("campaign", "mailing_list"), True),)


class Trace(BaseModel):
    """One recipient of one campaign: outgoing → sent | error | bounce | reply, or canceled
    with `cancel_reason`. Unique per (campaign, contact): a batch can never be traced twice."""
    # No index of its own: the unique (campaign, contact_id) index serves lookups by
    # campaign (and ON DELETE CASCADE); a second one cost an index write per trace.
    campaign = pw.ForeignKeyField(Campaign, on_delete="CASCADE", index=False)
    contact_id = pw.IntegerField()
    email = pw.CharField(max_length=320, null=True)
    email_normalized = pw.CharField(max_length=320, null=True)
    status = pw.CharField(max_length=16, default="outgoing")
    cancel_reason = pw.CharField(max_length=16, null=True)
    failure_type = pw.CharField(max_length=32, null=True)
    failure_reason = pw.TextField(null=True)
    message_id = pw.CharField(max_length=512, null=True, index=True)
    created_at = UTCDateTimeField()
    sent_at = UTCDateTimeField(null=True)
    updated_at = UTCDateTimeField(null=True)
    opened_at = UTCDateTimeField(null=True)  # first open (tracked campaigns only)
    clicked_at = UTCDateTimeField(null=True)  # first click (tracked campaigns only)

    class Meta:
        table_name = "marketing_trace"
        indexes = ((("campaign", "contact_id"), True), (("campaign", "email_normalized"), False),
                   (("campaign", "status"), False))


CANCELED = pw.SQL("'canceled'")  # a literal: only then may the planners use the partial index below
# The vacuum's canceled traces by age. Partial, so that a trace sent, failed or bounced
# writes nothing to it: unrestricted, every `sent` UPDATE moved each trace's entry (half
# the cost of that UPDATE) and every trace written added one. (Why status is in it:
# migrations/0005_trace_indexes.py.)
Trace.add_index(Trace.index(Trace.status, Trace.created_at, where=(Trace.status == CANCELED),
                            name="marketing_trace_canceled_created_at"))


MODELS = [MailingList, Contact, Blacklist, BounceEvent, Campaign, CampaignList, Trace]
