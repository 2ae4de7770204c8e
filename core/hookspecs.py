"""Every Postroom hook, with its contract.

A plugin is a module (or object) carrying a `PLUGIN = PluginInfo(...)` attribute and any
number of functions decorated with `core.hookimpl` whose names match a hook below. Builtin
plugins and third-party plugins (entry-point group `postroom.plugins`) load the same way;
only the plugins a deployment *enabled* are registered, so a disabled plugin's hooks never
fire. Hooks are called with keyword arguments; an implementation may accept any subset.
"""
import pluggy

hookspec = pluggy.HookspecMarker("postroom")


# --- lifecycle ---------------------------------------------------------------------

@hookspec
def postroom_configure(host):
    """Called when a host has opened its database and registered the enabled plugins, and
    again whenever the enabled set changes (so it must be idempotent).

    `host` is the `core.host.Host`. Read your config keys from `host.config`; publish
    services for other plugins with `host.provide(name, obj)`; bind nothing yourself
    (models are bound through `postroom_models`). Return value ignored.
    """


@hookspec
def postroom_serve(host, register):
    """Called by `postroom serve` before its loop starts.

    `host` is the running `core.host.Host`.

    Call `register(service)` for each long-running service to run beside the scheduler
    (e.g. the inbound gateway). A service has `name`, `start()` and `stop()`; `start()`
    must not block. Services are stopped in reverse order on SIGTERM/SIGINT. Return
    value ignored.
    """


# --- registries --------------------------------------------------------------------

@hookspec
def postroom_models():
    """Return a list of peewee model classes this plugin owns.

    They are bound to the host's database when the plugin is registered. Tables are not
    created here: that is what migrations are for.
    """


@hookspec
def postroom_migrations():
    """Return `(component, directory)`: the plugin's migration folder.

    Files named `NNNN_name.py` with `up(migrator, db)` are applied in order when the plugin
    is enabled (and on every host open, for upgrades); history is kept per component in a
    table `migrations_<component>`.
    """


@hookspec
def postroom_scheduled_actions():
    """Return a list of `core.scheduler.ActionSpec` this plugin provides.

    Each becomes a row in `cron_action` when the plugin is enabled (existing rows keep the
    operator's interval and state). The handler is `handler(host, run)`, where `run` is a
    `core.scheduler.RunContext` (time budget, clock, `progress(done, remaining)`).
    """


@hookspec
def postroom_cli_commands(cli):
    """Add click commands or groups to the root group `cli` (call `cli.add_command`).

    Called when the CLI is built for a host, only for enabled plugins, so a plugin's
    commands exist only when it is enabled. Return value ignored.
    """


@hookspec
def postroom_record_types(register):
    """Call `register(RecordType(name, label, ...))` for each record type you provide.

    `name` is the model name used in (model, id) addresses, e.g. `helpdesk.ticket`. A name
    registered twice is an error at host open.
    """


# --- messaging ---------------------------------------------------------------------

@hookspec(firstresult=True)
def postroom_email_channel(host):
    """Return True if this plugin delivers email notifications (stops at the first non-None).

    `host` is the running `core.host.Host`.

    When no enabled plugin answers True, partners who prefer email are notified in-app,
    so no notification is left waiting for a mailer that does not exist.
    """


@hookspec
def postroom_message_posted(host, message, notified):
    """Called inside the posting transaction, after the message and its notifications exist.

    `message` is the `core.models.Message`; `notified` is the number of notification rows
    created. Mail plugins turn `ready` email notifications into outgoing mail here (with
    set-based SQL: the statement count must not grow with the follower count). Anything
    that talks to the network must wait for `host.after_commit`. Return value ignored.
    """


@hookspec
def postroom_record_created(host, record, values):
    """Called inside the creating transaction after a record of any type was created.

    `host` is the running `core.host.Host`.

    `values` is the dict of extra values given at creation. Return value ignored.
    """


@hookspec
def postroom_mail_prepare(host, mail, message):
    """Called just before an outgoing mail is handed to SMTP.

    `host` is the running `core.host.Host`.

    `mail` is the plugin's outgoing-mail row (read-only here), `message` the
    `email.message.EmailMessage` about to be sent: add headers, sign it. Must not touch the
    database. Return value ignored.
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


@hookspec(firstresult=True)
def postroom_inbound_recipient(host, local_part, domain):
    """Claim an inbound recipient address for your plugin (stops at the first non-None).

    `local_part` (lower-cased) and `domain` (one of the deployment's domains) are the
    recipient the sending server asked for.

    Return a handler `handle(host, envelope_from, recipient, message) -> (code, text)` to
    take mail for that address, or None to pass. Called at RCPT time on a worker thread.
    """


@hookspec
def postroom_inbound_routed(host, route, message_id, record):
    """Called after the inbound gateway stored a message and committed.

    `host` is the running `core.host.Host`.

    `route` is one of `reply`, `alias`, `bounce`, `claimed`; `message_id` is the incoming
    mail's RFC 5322 Message-Id; `record` is the record posted on (or None). Return value ignored.
    """


@hookspec
def postroom_bounce_received(host, bounce):
    """Called inside the bounce's transaction when a delivery failure came back.

    `host` is the running `core.host.Host`.

    `bounce` is a dict: `email` (the bounced address, normalised), `token` (the value of
    the signed bounce address, e.g. `n42` or `mt17`, or None when only headers matched),
    `message_id` (the RFC 5322 Message-Id of the mail that bounced, or None), `reason` (the
    diagnostic text), `partner_id` and `notification_id` (or None). The core effects
    (notification → `bounce`, partner counter) are already applied. Return value ignored.
    """


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


# --- maintenance -------------------------------------------------------------------

@hookspec
def postroom_vacuum(host, batch_size, dry_run):
    """Remove this plugin's redundant data, in chunks of at most `batch_size` rows.

    `host` is the running `core.host.Host`.

    Called by `Base: Auto-vacuum internal data`, each plugin in its own transaction.
    Return a dict `{"removed": {kind: count}, "remaining": n}`; with `dry_run` count what
    would go and delete nothing.
    """


@hookspec
def postroom_doctor_checks(host):
    """Return a list of `core.doctor.Check` results for `postroom doctor`.

    `host` is the running `core.host.Host`.

    Each has `name`, `status` (ok | warn | fail), a one-line `finding` and a one-line
    `remedy`. Checks must not raise; an unexpected error is a `fail` with its message.
    """
