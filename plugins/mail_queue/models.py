"""Tables of the mail_queue plugin: outgoing mails, SMTP servers, the daily send counter."""
import peewee as pw

from postroom.core.db import JSONField, UTCDateTimeField
from postroom.core.models import BaseModel, Message

STATES = ("outgoing", "sent", "exception", "cancel")


class OutgoingMail(BaseModel):
    """One email to one recipient (Odoo's mail.mail): outgoing → sent | exception | cancel.

    `notification_id` and `message` tie it to the chatter; `ref` is the enqueuer's own key
    (e.g. a campaign trace `mt12`), also the value of the signed bounce address. A claimed
    mail carries a lease (`lease_owner`, `lease_until`): a worker that dies mid-send loses
    its claim when the lease runs out and another worker takes the mail over (a working
    worker renews its lease and re-checks it before each conversation)."""
    # The chatter message (its RFC 5322 id is `message_id`, hence the explicit column name).
    message = pw.ForeignKeyField(Message, null=True, on_delete="SET NULL",
                                 column_name="chatter_message_id", object_id_name="chatter_message_id")
    notification_id = pw.IntegerField(null=True, index=True)
    ref = pw.CharField(max_length=64, null=True, index=True)
    email_from = pw.CharField(max_length=512, null=True)
    email_to = pw.CharField(max_length=320, null=True)
    recipient_name = pw.CharField(max_length=256, null=True)
    subject = pw.CharField(max_length=998, null=True)
    body_html = pw.TextField(default="")
    # The text/plain part; None: derived from body_html. Stored deflated against body_html
    # when that is shorter (textpack: compose reads it back).
    body_text = pw.TextField(null=True)
    headers = JSONField(null=True)
    attachment_ids = JSONField(null=True)  # [core Attachment id, ...], held by the enqueuer
    message_id = pw.CharField(max_length=512)
    in_reply_to = pw.CharField(max_length=512, null=True)
    references = pw.TextField(null=True)
    reply_to = pw.CharField(max_length=512, null=True)
    state = pw.CharField(max_length=16, default="outgoing")
    failure_type = pw.CharField(max_length=32, null=True)
    failure_reason = pw.TextField(null=True)
    bulk = pw.BooleanField(default=True)
    auto_delete = pw.BooleanField(default=True)
    scheduled_at = UTCDateTimeField(null=True)
    next_attempt_at = UTCDateTimeField(null=True)
    attempts = pw.IntegerField(default=0)
    expires_at = UTCDateTimeField(null=True)  # temporary failures past this go to exception
    server = pw.CharField(max_length=128, null=True)
    lease_owner = pw.CharField(max_length=128, null=True)
    lease_until = UTCDateTimeField(null=True)
    # Set (with the previous mail's outcome, in one commit) just before a worker hands the
    # mail to SMTP; cleared with its outcome. A taken-over mail that still carries it was
    # in the middle of a conversation: it may have been delivered.
    sending_since = UTCDateTimeField(null=True)
    # DEFAULT in the schema too: INSERT ... SELECT (chatter notifications) names no value for it.
    doubtful = pw.IntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])  # attempts that may have delivered it (retried once)
    created_at = UTCDateTimeField()
    sent_at = UTCDateTimeField(null=True)
    updated_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "mail_queue_mail"
        # (state) keeps rowid order, so a claim reads the oldest due mails without sorting
        # the queue; (lease_owner) finds a claim's rows without scanning the table.
        # (state, updated_at), (state, created_at) and (created_at) keep the console's
        # 24-hour chart (its waiting mails) and age filters to the rows they show, not the
        # whole queue.
        indexes = ((("state",), False), (("lease_owner",), False), (("state", "updated_at"), False),
                   (("state", "created_at"), False), (("created_at",), False))


class MailServer(BaseModel):
    """An operator-added outgoing SMTP server. The password is never stored: `password_env`
    names the environment variable that holds it."""
    name = pw.CharField(max_length=128, unique=True)
    host = pw.CharField(max_length=256)
    port = pw.IntegerField(default=25)
    encryption = pw.CharField(max_length=8, default="none")  # none | starttls | ssl
    user = pw.CharField(max_length=256, null=True)
    password_env = pw.CharField(max_length=128, null=True)
    from_filter = pw.CharField(max_length=320, null=True)
    daily_limit = pw.IntegerField(null=True)
    created_at = UTCDateTimeField()

    class Meta:
        table_name = "mail_queue_server"


class DailyCount(BaseModel):
    """Emails counted against a server's daily limit, one row per (server, UTC day).

    Slots are taken with a compare-and-set UPDATE before the SMTP conversation, so the count
    stays exact with any number of workers."""
    server = pw.CharField(max_length=128)
    day = pw.CharField(max_length=10)  # YYYY-MM-DD, UTC
    count = pw.IntegerField(default=0)

    class Meta:
        table_name = "mail_queue_daily_count"
        primary_key = pw.CompositeKey("server", "day")


class DkimKey(BaseModel):
    """A DKIM signing key of one domain: the public half and where the private half lives.

    The private key is a file under `data_dir/dkim/` (mode 0600), never a column: database
    dumps, replicas and backups then carry nothing that lets anyone sign as the domain.
    One key per domain (the selector names it in DNS)."""
    domain = pw.CharField(max_length=253, unique=True)
    selector = pw.CharField(max_length=63)
    algorithm = pw.CharField(max_length=16)  # rsa-2048 | ed25519
    public_key = pw.TextField()  # base64, as published in p=
    key_file = pw.CharField(max_length=1024)  # relative to data_dir
    created_at = UTCDateTimeField()

    class Meta:
        table_name = "mail_queue_dkim_key"


class OutcomeCount(BaseModel):
    """How many send attempts ended how, since the deployment began: the counters behind
    `/metrics` (`sent`, `failed` for good, `retry`), by failure type and SMTP reply class
    (`2xx`, `4xx`, `5xx`, `none` when no server answered). Added to in the transaction
    that records the outcomes; never vacuumed (a counter only grows)."""
    outcome = pw.CharField(max_length=8)
    failure_type = pw.CharField(max_length=32, default="")
    reply_class = pw.CharField(max_length=4)
    count = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "mail_queue_outcome_count"
        primary_key = pw.CompositeKey("outcome", "failure_type", "reply_class")


class HourlyCount(BaseModel):
    """Mails sent and mails failed for good in each UTC hour, counted where the outcomes are
    recorded (one upsert per batch): the console's 24-hour chart reads a few dozen rows
    instead of grouping the queue, and counts auto-deleted mails, which leave no row behind."""
    hour = UTCDateTimeField()  # the hour's start
    outcome = pw.CharField(max_length=8)  # sent | failed
    count = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "mail_queue_hourly_count"
        primary_key = pw.CompositeKey("hour", "outcome")


class DomainPace(BaseModel):
    """Pacing and back-off of one recipient domain, shared by every worker: mails counted in
    the current pacing window, and the back-off a "slow down" reply (421, 4.7.x) began."""
    domain = pw.CharField(max_length=253, primary_key=True)
    window_start = UTCDateTimeField(null=True)
    window_count = pw.IntegerField(default=0)
    backoff_until = UTCDateTimeField(null=True)
    backoff_seconds = pw.FloatField(default=0)
    reason = pw.TextField(null=True)

    class Meta:
        table_name = "mail_queue_domain_pace"


class OutcomeJournal(BaseModel):
    """The per-mail outcomes of claims still at work, appended right after each server answer
    (`journal.py`): `sent` (with the server), or `sending` (the mail handed to SMTP next).
    No key and no index, so each append writes one small page instead of the mail's row and
    the state indexes; the claim applies its rows to mail_queue_mail set-based and deletes
    them, and a worker taking over an expired claim applies what the dead worker left."""
    mail_id = pw.IntegerField()
    token = pw.CharField(max_length=128)  # the claim's lease_owner
    outcome = pw.CharField(max_length=8)  # sent | sending
    server = pw.CharField(max_length=128, null=True)
    at = UTCDateTimeField()

    class Meta:
        table_name = "mail_queue_progress"
        primary_key = False


MODELS = [OutgoingMail, MailServer, DailyCount, DkimKey, OutcomeCount, HourlyCount, DomainPace, OutcomeJournal]
