"""Tables of the inbound plugin: aliases, the decision log, and the originals kept."""
import peewee as pw

from postroom.core.db import JSONField, UTCDateTimeField
from postroom.core.models import BaseModel

CONTACT_POLICIES = ("everyone", "partners", "followers")
REQUIRE_AUTH = ("dmarc", "none")


class InboundAlias(BaseModel):
    """An address on the deployment's domains that opens records (Odoo's mail.alias).

    `record_id` set: mail to it is posted on that fixed record; unset: each mail creates a
    record of type `model` named after its subject, with `defaults` as its values."""
    local_part = pw.CharField(max_length=64, unique=True)  # stored lower-case
    model = pw.CharField(max_length=64)
    record_id = pw.IntegerField(null=True)
    contact = pw.CharField(max_length=16, default="everyone")
    # dmarc | none; null: dmarc for followers/partners when the From domain publishes
    # quarantine or reject (see auth.required)
    require_auth = pw.CharField(max_length=8, null=True)
    defaults = JSONField(null=True)
    created_at = UTCDateTimeField()

    class Meta:
        table_name = "inbound_alias"


class InboundOriginal(BaseModel):
    """The raw bytes of an accepted message, kept for `inbound export` until vacuumed."""
    message_id = pw.CharField(max_length=512, null=True, index=True)
    mail_from = pw.CharField(max_length=512, default="")
    size = pw.IntegerField(default=0)
    content = pw.BlobField()
    created_at = UTCDateTimeField(index=True)

    class Meta:
        table_name = "inbound_original"


class InboundDecision(BaseModel):
    """One verdict of the gateway: at RCPT time (refusals) or after DATA (per outcome).

    Loop protection counts rows with `counts` by `sender` (the normalised author: From
    header, else envelope sender), by `envelope_sender` (lower-cased) and by `client` (the
    client's IP, or the original client an MTA forwarded; empty for a trusted MTA that did
    not say). `repeat` > 1 is an aggregate: that many refusals of one peer within a minute.
    `auth` is the sender authentication result (`spf=pass dkim=none dmarc=none ...`). `route` is duplicate | bounce | reply | alias | claimed |
    postmaster | rejected | refused | tempfail."""
    created_at = UTCDateTimeField()
    peer = pw.CharField(max_length=128, default="")
    mail_from = pw.CharField(max_length=512, default="")
    sender = pw.CharField(max_length=320, default="")  # indexed by (sender, counts, created_at)
    recipients = pw.TextField(default="")
    message_id = pw.CharField(max_length=512, null=True)
    verdict = pw.CharField(max_length=16)  # accepted | refused | tempfail
    route = pw.CharField(max_length=16)
    code = pw.IntegerField()
    reason = pw.TextField(default="")
    model = pw.CharField(max_length=64, null=True)
    res_id = pw.IntegerField(null=True)
    original_id = pw.IntegerField(null=True)  # not a foreign key: originals expire first
    counts = pw.BooleanField(default=False)  # created a record or message (loop protection)
    envelope_sender = pw.CharField(max_length=320, default="")
    client = pw.CharField(max_length=64, default="")
    repeat = pw.IntegerField(default=1)
    auth = pw.TextField(default="")

    class Meta:
        table_name = "inbound_decision"
        indexes = ((("sender", "counts", "created_at"), False),
                   (("envelope_sender", "counts", "created_at"), False),
                   (("client", "counts", "created_at"), False),
                   (("created_at",), False))


MODELS = [InboundAlias, InboundOriginal, InboundDecision]
