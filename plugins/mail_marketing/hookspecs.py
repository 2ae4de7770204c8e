"""Hooks of the mail_marketing plugin.

mail_marketing calls these; they exist while it is enabled (`PluginInfo(hookspecs=...)`).
Another plugin implements them with `@hookimpl(optionalhook=True)`.
"""
from postroom.core.hookspecs import hookspec


@hookspec
def postroom_campaign_batch(host, campaign, mails):
    """Called by mail_marketing inside a campaign batch's transaction, just before the
    batch's mails are handed to the "mail" service.

    `host` is the running `core.host.Host`.

    `campaign` is the mail_marketing `Campaign` row (read-only); `mails` the list of dicts
    about to be enqueued (keys of `mail.enqueue`: `email_to`, `subject`, `body_html`,
    `headers`, `ref` = `mt<trace id>`, `message_id`, ...). Change them in place to
    personalise the mails (e.g. tracking links); no network work. Raising aborts the whole
    batch (no trace created, nothing enqueued): the error is recorded on the campaign,
    which then holds the head of the marketing queue until it is fixed or canceled.
    Return value ignored.
    """


@hookspec
def postroom_campaign_template_context(host, campaign):
    """Called by mail_marketing once per campaign batch (inside its transaction), and when
    a campaign is created or tested, to learn what else its templates may use.

    `host` is the running `core.host.Host`; `campaign` the `Campaign` row (read-only).

    Return a dict of extra top-level names for the campaign's subject and body templates
    (plain values, dicts and lists: templates read mappings, never Python attributes), or
    None. The names `contact`, `campaign` and `unsubscribe_url` are Postroom's and cannot
    be replaced. No network work. Results of all implementations are merged.
    """
