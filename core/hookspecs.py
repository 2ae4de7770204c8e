"""The host's own hooks, with their contract.

A plugin is a module (or object) carrying a `PLUGIN = PluginInfo(...)` attribute and any
number of functions decorated with `postroom.hookimpl` whose names match a hook. Builtin
plugins and third-party plugins (entry-point group `postroom.plugins`) load the same way;
only the plugins a deployment *enabled* are registered, so a disabled plugin's hooks never
fire. Hooks are called with keyword arguments; an implementation may accept any subset.

This file holds only the hooks the host itself calls. A hook that belongs to one plugin's
domain is specified by that plugin, in its own `hookspecs.py` named by
`PluginInfo(hookspecs=...)`, and exists while that plugin is enabled: mail_queue's
(`postroom_mail_prepare`, `postroom_reply_to`, `postroom_mail_sent`,
`postroom_mail_failed`), inbound's (`postroom_inbound_recipient`, `postroom_inbound_reply`,
`postroom_inbound_routed`, `postroom_bounce_received`) and mail_marketing's
(`postroom_campaign_batch`). Implement those with `@hookimpl(optionalhook=True)`.
"""
import pluggy

class HookspecMarker(pluggy.HookspecMarker):
    """`@hookspec` declares a Postroom hook: the function's name (prefixed `postroom_`),
    its arguments and its docstring, which is the contract. `firstresult=True` stops at
    the first non-None answer. A plugin declaring its own hooks puts them in a module
    named by `PluginInfo(hookspecs=...)`."""

    __slots__ = ()


hookspec = HookspecMarker("postroom")


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

    It is also called without a host, for every installed plugin, when a command cannot be
    found because the deployment cannot be opened (config unreadable, database away) or the
    plugin is not enabled: the CLI then names the real problem instead of "No such
    command". A command an MTA runs (a pipe transport) sets the attribute
    `mta_pipe = True` on its click command: such a failure, which is the deployment's and
    not the message's, then exits 75 (EX_TEMPFAIL) so that the MTA defers and retries.
    """


@hookspec
def postroom_record_types(register):
    """Call `register(RecordType(name, label, ...))` for each record type you provide.

    `name` is the model name used in (model, id) addresses, e.g. `helpdesk.ticket`. A name
    registered twice is an error at host open.
    """


@hookspec
def postroom_message_subtypes(register):
    """Call `register(core.subtypes.Subtype(name, label, default=True))` for each message
    subtype you provide (e.g. "invoice_paid" for your invoices).

    Called when the host opens and whenever the enabled plugins change. Followers subscribe
    to subtypes (`record follow ... --subtypes`); a post with a subtype notifies only the
    followers subscribed to it; followers who chose no subset get the subtypes whose
    `default` is true. A name registered twice is an error at host open. Return value
    ignored.
    """


@hookspec
def postroom_http_routes(host, register):
    """Add routes to the HTTP service (`postroom serve`, `postroom http serve`).

    Called once per implementation when the HTTP app is built (at service start), only
    for enabled plugins. Call `register(prefix, routes, public=False, nav=None,
    templates=None, links=None)` for each group of routes:

    - `prefix` is the path the routes are mounted under, one lower-case segment such as
      `"/queue"` (letters, digits, `-`, `_`). Every prefix belongs to one plugin: a prefix
      registered twice, or one of the host's own (`/healthz`, `/metrics`, `/static`,
      `/login`, `/logout`, `/console`), is an error when the app is built.
    - `routes` is a list of `starlette.routing.Route` (paths relative to the prefix, e.g.
      `Route("/{id:int}", show, methods=["GET"])`). A method not listed answers 405, an
      unknown path 404, a body over `http_max_body` 413, and an exception a plain 500 (the
      traceback goes to the log, never into the response).
    - `public=True` for endpoints the world calls (one-click unsubscribe, tracking,
      metrics). Otherwise the routes are operator console screens: the host lets only a
      logged-in operator in (others are sent to the login page), checks the CSRF token of
      every POST and refuses POSTs from a read-only operator.
    - `nav` (console screens) is the label of the screen's entry in the console's
      navigation, linking to `prefix + "/"`; `templates` a folder of Jinja2 templates,
      reachable as `"<plugin name>/<file>"` (they may extend the host's `"base.html"` and
      import its `"macros.html"`); `links` names the pages of shared objects this group
      serves, e.g. `{"message": "/queue/message/{id}"}`: the core's record page links each
      chatter message's envelope there. Render with `postroom.render_screen`, answer a POST
      with `postroom.screen_done` and record every action with `postroom.audit_action`
      (the log, and the record's chatter when it concerns one); read the form with
      `postroom.form_value` (the guard has already read and checked it).

    A handler receives the `starlette.requests.Request`; `request.app.state.host` is this
    host, and on a console screen `request.state.operator` is the logged-in operator. It
    returns a Starlette `Response`. Database work must not block the event loop: write the
    handler as a plain `def` (Starlette runs it on a worker thread, each with its own
    database connection), or `async def` and `await postroom.run_db(request, fn, *args)`,
    which runs `fn` on the same pool. Open write transactions with `host.transaction()`
    as everywhere else, and never hold one across network work. Return value ignored.
    """


@hookspec
def postroom_metrics(host):
    """Return a list of this plugin's metric families for `/metrics` (OpenMetrics).

    `host` is the running `core.host.Host`. Called on an HTTP worker thread (never the event
    loop) for every scrape, outside any transaction, only for enabled plugins. Build
    `prometheus_client.core` families (`GaugeMetricFamily`, `CounterMetricFamily`, ...) from
    your own tables with set-based aggregate queries (GROUP BY): a few statements whatever
    the number of rows. Name them `postroom_<plugin>_...`; a counter must only grow (read it
    from a row that is never vacuumed). No network work. An implementation that raises is
    logged and its families left out of that scrape (`postroom_metrics_contributor_failed`
    says so);
    the others still appear. Return None or [] for nothing.
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


# --- maintenance -------------------------------------------------------------------

@hookspec
def postroom_vacuum(host, batch_size, dry_run):
    """Remove this plugin's redundant data, in chunks of at most `batch_size` rows.

    `host` is the running `core.host.Host`.

    Called by `Base: Auto-vacuum internal data` (plugin `auto_vacuum`) and by `postroom
    vacuum`, once per chunk: each call runs in its own transaction opened by the caller
    (do not commit; `host.transaction()` inside nests as a savepoint), and is called again
    while it reports `remaining > 0` and the run has time left. A call that raises is
    rolled back and logged, and the other plugins are vacuumed anyway. Implementations
    are called one by one, enabled plugins first and the core last (so rows that point at
    core rows go before them).

    Remove at most `batch_size` rows of each kind per call, with set-based SQL (e.g. select
    up to `batch_size + 1` ids, delete the first `batch_size`): the statement count must
    not grow with the table. Never remove what is still to be sent, scheduled for later, or
    failed and not yet dealt with; never remove chatter messages. Read retention settings
    from `host.config`, time from `host.clock`. No network work.

    Return a dict `{"removed": {kind: count}, "remaining": n}`: `kind` is a short plural
    noun (`mails`, `notifications`); `count` what this call deleted; `remaining` a lower
    bound of the rows of all kinds still eligible after this call (1 is enough to say "more
    to do"; counting a million rows per chunk is not wanted), 0 when done. With `dry_run`
    delete nothing: `removed` counts everything that would go now (all chunks together)
    and `remaining` is 0. Return None when there is nothing to vacuum.
    """


@hookspec
def postroom_doctor_checks(host):
    """Return a list of `core.doctor.Check` results for `postroom doctor`.

    `host` is the running `core.host.Host`.

    Each has `name` (short and stable, e.g. `dns.spf`, `queue.interval`; the report also
    names the plugin), `status` (ok | warn | fail), a one-line `finding` (what is, with
    the numbers and names an operator needs) and a one-line `remedy` (what to do: ideally
    the Postroom command; may be empty for `ok`). `fail` means mail is or will be lost or
    refused; `warn` a risk or something that could not be checked (e.g. no DNS answer).
    Called outside any transaction; network probes are allowed but keep them bounded by a
    timeout of a few seconds. Checks should not raise: an exception (or a returned value
    that is not a list of `Check`) becomes one `fail` naming the plugin, and the other
    plugins' checks still run. The report lists the core's checks first, then each
    enabled plugin's in the order the plugins were enabled, keeping each list's order.
    """
