"""Core tables: parameters, plugin states, partners, records, chatter, scheduled actions.

Models are declared without a database; the host binds them to its own when it opens,
so tests can build hosts on as many databases as they like (one at a time per process).
"""
import peewee as pw

from .db import AutoIncrementField, JSONField, UTCDateTimeField


class BaseModel(pw.Model):
    """Every table's base: a model that declares no primary key of its own gets an id that
    is never reused (`AutoIncrementField`)."""
    id = AutoIncrementField()

    class Meta:
        legacy_table_names = False


class Parameter(BaseModel):
    """Key/value settings of a deployment (Odoo's ir.config_parameter)."""
    key = pw.CharField(primary_key=True, max_length=128)
    value = pw.TextField()

    class Meta:
        table_name = "parameter"


class PluginState(BaseModel):
    """Which plugins this deployment enabled; every worker reads the same answer."""
    name = pw.CharField(primary_key=True, max_length=64)
    enabled = pw.BooleanField(default=False)
    changed_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "plugin_state"


class Partner(BaseModel):
    """A contact. `email_normalized` is what matching uses."""
    name = pw.CharField(max_length=256)
    email = pw.CharField(max_length=320, null=True)
    email_normalized = pw.CharField(max_length=320, null=True, index=True)
    notification_type = pw.CharField(max_length=8, default="email")  # email | inbox
    message_bounce = pw.IntegerField(default=0)
    active = pw.BooleanField(default=True)
    created_at = UTCDateTimeField()

    class Meta:
        table_name = "partner"


class Record(BaseModel):
    """Anything with a chatter, addressed as (model, id). `model` is a registered record type."""
    model = pw.CharField(max_length=64, index=True)
    name = pw.CharField(max_length=512)
    values = JSONField(null=True)
    created_at = UTCDateTimeField()

    class Meta:
        table_name = "record"


class Message(BaseModel):
    """One chatter entry."""
    record = pw.ForeignKeyField(Record, null=True, on_delete="CASCADE", backref="messages")
    model = pw.CharField(max_length=64, null=True)
    author = pw.ForeignKeyField(Partner, null=True, on_delete="SET NULL")
    email_from = pw.CharField(max_length=512, null=True)
    subject = pw.CharField(max_length=998, null=True)
    body = pw.TextField(default="")
    message_type = pw.CharField(max_length=16, default="comment")  # comment | notification | email
    is_internal = pw.BooleanField(default=False)
    parent = pw.ForeignKeyField("self", null=True, on_delete="SET NULL")
    message_id = pw.CharField(max_length=512, unique=True)
    subtype = pw.CharField(max_length=64, null=True)  # core.subtypes; None: discussion
    created_at = UTCDateTimeField(index=True)

    class Meta:
        table_name = "message"


class Follower(BaseModel):
    # Looked up by record through the unique (record, partner) index (see Notification.message).
    record = pw.ForeignKeyField(Record, on_delete="CASCADE", backref="followers", index=False)
    partner = pw.ForeignKeyField(Partner, on_delete="CASCADE")
    subtypes = pw.CharField(max_length=1024, null=True)  # ",a,b," chosen; None: the defaults

    class Meta:
        table_name = "follower"
        indexes = ((("record", "partner"), True),)


class Notification(BaseModel):
    """One per (message, recipient): ready → sent | exception | bounce | canceled."""
    # No index of its own: the unique (message, partner) index serves lookups by message
    # (and ON DELETE CASCADE); a second one cost a page write per batch of inbound mail.
    message = pw.ForeignKeyField(Message, on_delete="CASCADE", backref="notifications", index=False)
    partner = pw.ForeignKeyField(Partner, on_delete="CASCADE")
    notification_type = pw.CharField(max_length=8, default="email")  # email | inbox
    status = pw.CharField(max_length=16, default="ready", index=True)
    failure_type = pw.CharField(max_length=32, null=True)
    failure_reason = pw.TextField(null=True)
    is_read = pw.BooleanField(default=False)
    updated_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "notification"
        indexes = ((("message", "partner"), True),)


class CronAction(BaseModel):
    """A scheduled action. `code` names the handler a plugin registered."""
    code = pw.CharField(max_length=128, unique=True)
    name = pw.CharField(max_length=256, unique=True)
    plugin = pw.CharField(max_length=64)
    interval_number = pw.IntegerField(default=1)
    interval_type = pw.CharField(max_length=8, default="hours")  # minutes | hours | days
    nextcall = UTCDateTimeField()
    priority = pw.IntegerField(default=10)
    active = pw.BooleanField(default=True)
    lease_owner = pw.CharField(max_length=128, null=True)
    lease_until = UTCDateTimeField(null=True)
    last_run_at = UTCDateTimeField(null=True)
    last_duration = pw.FloatField(null=True)
    last_result = pw.TextField(null=True)
    failure_count = pw.IntegerField(default=0)
    first_failure_at = UTCDateTimeField(null=True)
    last_error = pw.TextField(null=True)

    class Meta:
        table_name = "cron_action"


class CronTrigger(BaseModel):
    """A request to run an action earlier than its next call."""
    cron = pw.ForeignKeyField(CronAction, on_delete="CASCADE", backref="triggers")
    call_at = UTCDateTimeField(index=True)

    class Meta:
        table_name = "cron_trigger"


class AttachmentContent(BaseModel):
    """Content stored once per checksum in the file store (`core.attachments`).

    A row exists only while its file does: the row is written in the transaction that
    wrote the file, and removed (by the vacuum) in the transaction that unlinks it."""
    checksum = pw.CharField(primary_key=True, max_length=64)  # sha256, hex
    size = pw.BigIntegerField()
    last_used_at = UTCDateTimeField()

    class Meta:
        table_name = "attachment_content"


class Attachment(BaseModel):
    """One use of a file: its name and type as the user gave them, and who holds it
    (`res_model`, `res_id`: "message" and a message id, a plugin's own model and row).
    The bytes are `content`'s, shared by every attachment with the same checksum."""
    name = pw.CharField(max_length=255)
    mimetype = pw.CharField(max_length=128)
    size = pw.BigIntegerField()
    content = pw.ForeignKeyField(AttachmentContent, column_name="checksum", on_delete="RESTRICT",
                                 object_id_name="checksum")
    res_model = pw.CharField(max_length=64, null=True)
    res_id = pw.IntegerField(null=True)
    content_id = pw.CharField(max_length=255, null=True)  # an inline part's Content-ID
    created_at = UTCDateTimeField()

    class Meta:
        table_name = "attachment"
        indexes = ((("res_model", "res_id"), False),)


class Template(BaseModel):
    """An operator's Jinja2 template (`core.templates`): a named one for campaigns and
    `mail send --template` (`kind` "mail"), or the notification layout of a record type
    (`kind` "layout", `name` is the model)."""
    kind = pw.CharField(max_length=16)
    name = pw.CharField(max_length=128)
    subject = pw.TextField(default="")
    body = pw.TextField(default="")
    created_at = UTCDateTimeField()
    updated_at = UTCDateTimeField()

    class Meta:
        table_name = "template"
        indexes = ((("kind", "name"), True),)


# Later tables come last: migration 0001 creates every model listed here on a fresh
# database; 0002 (attachments), 0003 (templates) and 0004 (subtypes) add them to
# databases made before.
CORE_MODELS = [Parameter, PluginState, Partner, Record, Message, Follower, Notification,
               CronAction, CronTrigger, AttachmentContent, Attachment, Template]
