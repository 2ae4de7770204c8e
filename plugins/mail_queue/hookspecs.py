"""Hooks of the mail_queue plugin: what other plugins may do to, and hear about, outgoing mail.

mail_queue calls these; they exist while mail_queue is enabled (`PluginInfo(hookspecs=...)`
adds them to the host's plugin manager before mail_queue's own implementations). Another
plugin implements them with `@hookimpl(optionalhook=True)`, so it still loads where
mail_queue is disabled. The "mail" service itself is specified in `postroom.core.services`.
"""
from postroom.core.hookspecs import hookspec


@hookspec
def postroom_mail_prepare(host, mail, message):
    """Called just before an outgoing mail is handed to SMTP.

    `host` is the running `core.host.Host`.

    `mail` is the plugin's outgoing-mail row (read-only here), `message` the
    `email.message.EmailMessage` about to be sent: add or change headers. Do not sign it:
    mail_queue DKIM-signs the final bytes after this hook. Must not touch the database.
    Return value ignored.
    """


@hookspec(firstresult=True)
def postroom_reply_to(host, record):
    """Return the Reply-To address for mail about `record` (stops at the first non-None).

    `host` is the running `core.host.Host`; `record` is the `core.models.Record` whose
    chatter message is being mailed. Return the record's alias address (e.g.
    `"Ticket 12" <support@example.com>`) so that replies come back to it, or None to pass;
    when nobody answers, mail_queue uses the catchall address. Called inside the posting
    transaction; read only, no network work.
    """


@hookspec
def postroom_mail_sent(host, mails):
    """Called after a batch of outgoing mails was sent and their state committed.

    `host` is the running `core.host.Host`.

    `mails` is a list of dicts with `mail_id`, `notification_id`, `message_id` (RFC 5322),
    `email_to` and `ref` (the opaque string the enqueuer attached, e.g. a campaign trace
    key, or None). The mails may already be auto-deleted. Update your own rows with
    set-based SQL. Return value ignored.
    """


@hookspec
def postroom_mail_failed(host, mails):
    """Called after outgoing mail attempts failed and their state was committed.

    `host` is the running `core.host.Host`.

    `mails` is a list of dicts with the keys of `postroom_mail_sent` plus `failure_type`,
    `failure_reason` and `permanent` (True when the mail went to `exception`, False when it
    will be retried). Return value ignored.
    """
