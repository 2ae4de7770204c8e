"""`postroom`: the click root group and the core commands. Plugins add their groups through
the `postroom_cli_commands` hook, so a plugin's commands exist only while it is enabled."""
import os
import sys

import click
import peewee as pw

from postroom.core import api, attachments, chatter, records, scheduler, template_store, templates, tracking
from postroom.core import plugins as plugin_loader
from postroom.core.config import Config
from postroom.core.context import CREATES_DATABASE, get_host, warn_once
from postroom.core.errors import DatabaseUnavailable, InvalidInput, NotFound, PostroomError, first_line
from postroom.core.output import created, fields, show, table, to_json


def core_only(command):
    """Mark a core command or group that no plugin extends: resolving it opens no host."""
    command.postroom_core_only = True
    return command




class PostroomGroup(click.Group):
    """Root group: core commands plus those of enabled plugins; errors become one line."""

    def _plugin_commands(self, ctx) -> dict:
        if "postroom.plugin_commands" not in ctx.meta:
            collector = click.Group()
            try:
                host = get_host(ctx)
                host.hook.postroom_cli_commands(cli=collector)
            except PostroomError as exc:
                # core commands still work; the command itself will report the problem
                ctx.meta["postroom.host_error"] = exc
            ctx.meta["postroom.plugin_commands"] = collector.commands
        return ctx.meta["postroom.plugin_commands"]

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self._plugin_commands(ctx)))

    def get_command(self, ctx, name):
        core = super().get_command(ctx, name)
        if core is not None and getattr(core, "postroom_core_only", False):
            return core
        plugin = self._plugin_commands(ctx).get(name)
        if isinstance(core, click.Group) and isinstance(plugin, click.Group):
            return _merged_group(core, plugin)
        return core or plugin

    def resolve_command(self, ctx, args):
        if args and not ctx.resilient_parsing and self.get_command(ctx, args[0]) is None:
            error = _unusable_plugin_command(ctx, args)
            if error is not None:
                raise error
        return super().resolve_command(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PostroomError as exc:
            _fail(exc, exc.exit_code)
        except pw.OperationalError as exc:
            _fail(DatabaseUnavailable(f"database error: {first_line(exc) or type(exc).__name__}"), 75)
        except pw.IntegrityError as exc:
            _fail(f"refused by the database (nothing was written): {first_line(exc)}", 4)
        except click.exceptions.UsageError as exc:
            if exc.ctx is not None and getattr(exc.ctx.command, "mta_pipe", False):
                # A wrong argv in master.cf is the deployment's mistake: defer, never bounce.
                _fail(f"451 4.3.0 {exc.format_message()} (temporary: the MTA keeps the mail and retries)", 75)
            raise
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - never show an operator a traceback
            if os.environ.get("POSTROOM_DEBUG"):
                raise
            import logging

            from postroom.core.logs import DailyRotatingHandler
            logging.getLogger("postroom").exception("unexpected error in %s", ctx.invoked_subcommand)
            logger = logging.getLogger("postroom")
            logged = any(isinstance(h, DailyRotatingHandler) for h in logger.handlers)
            where = "details in postroom.log; " if logged else ""  # never point at a log that is not there
            _fail(f"unexpected error: {type(exc).__name__}: {exc} ({where}"
                  f"POSTROOM_DEBUG=1 shows the traceback)", 70)


class _SetupTempfail(PostroomError):
    """The deployment, not the message, is at fault in a command an MTA runs: defer."""

    exit_code = 75  # sysexits EX_TEMPFAIL: Postfix's pipe(8) defers and retries


def _unusable_plugin_command(ctx, args) -> PostroomError | None:
    """Why `args[0]`, a command of an installed plugin, cannot run here (the deployment could
    not be opened, or the plugin is not enabled), as the error to report; None when no
    installed plugin has such a command. A command marked `mta_pipe` gets exit 75."""
    for plugin in plugin_loader.discover().values():
        collector = click.Group()
        hook = getattr(plugin, "postroom_cli_commands", None)
        if hook is None:
            continue
        hook(cli=collector)
        command = collector.commands.get(args[0])
        if command is None:
            continue
        name = plugin_loader.info_of(plugin).name
        error = ctx.meta.get("postroom.host_error") or NotFound(
            f"{args[0]!r} is a command of the plugin {name}, which is not enabled in this "
            f"deployment (postroom plugins enable {name})")
        for token in args[1:]:
            if not isinstance(command, click.Group):
                break
            if not token.startswith("-"):
                command = command.commands.get(token, command)
        if getattr(command, "mta_pipe", False):
            return _SetupTempfail(f"451 4.3.0 {error} (temporary: the MTA keeps the mail and retries)")
        return error
    return ctx.meta.get("postroom.host_error")


def _merged_group(core: click.Group, plugin: click.Group) -> click.Group:
    """A plugin group named like a core group (e.g. mail_queue's `message resend`) adds its
    subcommands to the core group's; a core subcommand wins a name clash. A fresh group is
    built per invocation, so the module-level core group is never changed."""
    return click.Group(name=core.name, commands={**plugin.commands, **core.commands},
                       callback=core.callback, params=core.params, help=core.help,
                       short_help=core.short_help)


def _fail(error, code):
    click.echo(f"Error: {error}", err=True)
    sys.exit(code)


@click.group(cls=PostroomGroup)
# A plain string: the config reader reports a missing or unreadable file itself (one line,
# exit 78, or 75 for an MTA's pipe), where click's Path would exit 2 and Postfix would bounce.
@click.option("--config", "config", metavar="PATH", envvar="POSTROOM_CONFIG",
              help="Config file (default: $POSTROOM_CONFIG, else ./postroom.cfg if present).")
@click.version_option("0.1.0", prog_name="postroom")
def cli(config):
    """Postroom: the mail backbone of a business application."""


# --- init & admin ------------------------------------------------------------------

@core_only
@cli.command()
@click.option("--admin-email", help="A real address for the admin partner.")
@click.pass_context
def init(ctx, admin_email):
    """Create the database and the admin partner (running it again changes nothing)."""
    ctx.find_root().meta[CREATES_DATABASE] = True
    host = get_host(ctx)
    admin, was_created = records.ensure_admin(host, admin_email)
    click.echo(f"database ready: {host.config.database_url}")
    if records.admin_has_temporary_email(host):
        click.echo(f"warning: the admin partner has the temporary address {admin.email}; mail from "
                   f"or to it will fail. Set a real one: postroom admin set-email ADDRESS", err=True)
    created("admin partner" + ("" if was_created else " (exists)"), admin.id)


@cli.group()
def admin():
    """The admin partner."""


@admin.command("set-email")
@click.argument("address")
@click.pass_context
def admin_set_email(ctx, address):
    """Replace the admin partner's (temporary) address."""
    partner = records.set_admin_email(get_host(ctx), address)
    click.echo(f"admin partner {partner.id} now has email {partner.email}")


# --- config ------------------------------------------------------------------------

@core_only
@cli.group("config")
def config_group():
    """The configuration file."""


@config_group.command("check")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def config_check(ctx, as_json):
    """Check the config and print every key's effective value and its source (the file or
    the default); secrets masked. Exit 78 on a bad value. Opens no database."""
    from postroom.core import plugins as plugin_loader
    from postroom.core.host import declare_plugin_keys
    config = Config.load(ctx.find_root().params.get("config"))
    problems = []
    warnings = declare_plugin_keys(config, plugin_loader.discover(problems))
    warn_once(ctx.find_root(), problems + warnings)
    rows = config.effective()
    if as_json:
        click.echo(to_json({"file": config.path, "keys": rows, "warnings": problems + warnings}))
        return
    click.echo(f"config file: {os.path.abspath(config.path) if config.path else '(none: defaults)'}")
    click.echo(table(rows, ["key", "value", "source", "plugin"]))
    click.echo(f"ok: {len(rows)} keys checked" + (f", {len(warnings)} warning(s)" if warnings else ""))


# --- plugins -----------------------------------------------------------------------

@cli.group()
def plugins():
    """List, enable and disable plugins (stored per deployment)."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def plugins_list(ctx, as_json):
    """Available plugins and whether this deployment enabled them."""
    host = get_host(ctx)
    for problem in host.plugin_problems:
        click.echo(f"warning: {problem}", err=True)
    rows = host.plugin_rows()
    for r in rows:
        r["requires_"] = ", ".join(r["requires"]) or None
    if as_json:
        click.echo(to_json([{k: v for k, v in r.items() if k != "requires_"} for r in rows]))
    else:
        click.echo(table([dict(r, requires=r["requires_"]) for r in rows],
                         ["name", "enabled", "requires", "description"]))


@plugins.command("enable")
@click.argument("name")
@click.pass_context
def plugins_enable(ctx, name):
    """Enable NAME and what it requires: creates its tables and scheduled actions."""
    new = get_host(ctx).enable_plugin(name)
    click.echo(f"enabled: {', '.join(new)}" if new else f"{name} was already enabled")


@plugins.command("disable")
@click.argument("name")
@click.pass_context
def plugins_disable(ctx, name):
    """Disable NAME (its data is kept); refused while an enabled plugin requires it."""
    get_host(ctx).disable_plugin(name)
    click.echo(f"disabled: {name}")


# --- partners ----------------------------------------------------------------------

@cli.group()
def partner():
    """Contacts."""


@partner.command("add")
@click.argument("name")
@click.argument("email")
@click.option("--inbox", is_flag=True, help="Notify inside Postroom only: no email is sent.")
@click.pass_context
def partner_add(ctx, name, email, inbox):
    """Add a partner."""
    created("partner", records.create_partner(get_host(ctx), name, email, inbox=inbox).id)


@partner.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8-sig", errors="strict"))
@click.pass_context
def partner_import(ctx, file):
    """Import partners from a CSV with columns name,email (all or nothing)."""
    try:
        text = file.read()
    except UnicodeDecodeError:
        raise click.ClickException(f"{file.name} is not valid UTF-8")
    result = records.import_partners(get_host(ctx), text)
    click.echo(f"imported {result['imported']}, skipped {result['skipped']} already known")


@partner.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def partner_list(ctx, as_json):
    """Partners, with their bounce counters."""
    get_host(ctx)
    from postroom.core.models import Partner
    rows = [{"id": p.id, "name": p.name, "email": p.email, "notification_type": p.notification_type,
             "message_bounce": p.message_bounce, "active": p.active}
            for p in Partner.select().order_by(Partner.id)]
    show(rows, ["id", "name", "email", "notification_type", "message_bounce", "active"], as_json)


# --- records -----------------------------------------------------------------------

@cli.group()
def record():
    """Records with a chatter."""


@record.command("create")
@click.argument("model")
@click.argument("name")
@click.pass_context
def record_create(ctx, model, name):
    """Create a record of type MODEL (see `record types`)."""
    created(f"{model} record", records.create_record(get_host(ctx), model, name).id)


@record.command("types")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def record_types(ctx, as_json):
    """Record types registered by the core and the enabled plugins."""
    rows = [{"name": t.name, "label": t.label} for t in get_host(ctx).record_types.values()]
    show(sorted(rows, key=lambda r: r["name"]), ["name", "label"], as_json)


@record.command("list")
@click.option("--model")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def record_list(ctx, model, as_json):
    """Records, optionally of one type."""
    host = get_host(ctx)
    from postroom.core.models import Record
    query = Record.select().order_by(Record.id)
    if model:
        records.check_model(host, model)
        query = query.where(Record.model == model)
    rows = [{"id": r.id, "model": r.model, "name": r.name, "created_at": r.created_at} for r in query]
    show(rows, ["id", "model", "name", "created_at"], as_json)


@record.command("show")
@click.argument("model")
@click.argument("res_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def record_show(ctx, model, res_id, as_json):
    """A record, its followers and its chatter with each message's envelope."""
    host = get_host(ctx)
    rec = records.get_record(host, model, res_id)
    from postroom.core.models import Follower, Partner
    followers = [{"partner_id": p.id, "name": p.name, "email": p.email}
                 for p in Partner.select().join(Follower).where(Follower.record == rec).order_by(Partner.id)]
    messages = chatter.chatter(rec)
    env = chatter.envelopes([m.id for m in messages])
    msgs = [{"id": m.id, "date": m.created_at, "type": m.message_type, "note": m.is_internal,
             "author": m.email_from, "subject": m.subject, "envelope": env[m.id],
             "message_id": m.message_id, "body": m.body} for m in messages]
    data = {"id": rec.id, "model": rec.model, "name": rec.name, "values": rec.values,
            "created_at": rec.created_at, "followers": followers, "messages": msgs}
    if as_json:
        click.echo(to_json(data))
        return
    click.echo(f"{rec.model},{rec.id}  {rec.name}")
    click.echo("followers: " + (", ".join(f["email"] or f["name"] for f in followers) or "(none)"))
    from postroom.core.html import to_text
    click.echo(table([dict(m, body=to_text(m["body"])) for m in msgs],
                     ["id", "date", "type", "envelope", "author", "subject", "body"], "(no messages)"))


@record.command("follow")
@click.argument("model")
@click.argument("res_id")
@click.argument("email")
@click.option("--subtypes", help="Only these subtypes, comma separated (see `record subtypes`); "
                                 "default: those marked default.")
@click.pass_context
def record_follow(ctx, model, res_id, email, subtypes):
    """Make the partner with EMAIL follow the record."""
    host = get_host(ctx)
    rec = records.get_record(host, model, res_id)
    p = records.find_partner(host, email)
    added = records.follow(host, rec, p, subtypes.split(",") if subtypes is not None else None)
    click.echo(f"{p.email} {'now follows' if added else 'already follows'} {model},{rec.id}"
               + (f" (subtypes: {subtypes})" if subtypes is not None else ""))


@record.command("subtypes")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def record_subtypes(ctx, as_json):
    """Message subtypes followers can subscribe to (the core's and the plugins')."""
    rows = [{"name": s.name, "label": s.label, "default": s.default} for s in get_host(ctx).subtypes.values()]
    show(sorted(rows, key=lambda r: r["name"]), ["name", "label", "default"], as_json)


@record.command("update")
@click.argument("model")
@click.argument("res_id")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.pass_context
def record_update(ctx, model, res_id, pairs):
    """Write values; changes of tracked ones are posted on the chatter (old -> new)."""
    host = get_host(ctx)
    rec = records.get_record(host, model, res_id)
    message = tracking.update_record(host, rec, templates.parse_vars(pairs))
    click.echo(f"{model},{rec.id} updated" + (f"; tracked changes posted as message {message.id}"
                                               if message is not None else ""))


@record.command("unfollow")
@click.argument("model")
@click.argument("res_id")
@click.argument("email")
@click.pass_context
def record_unfollow(ctx, model, res_id, email):
    """Stop the partner with EMAIL following the record."""
    host = get_host(ctx)
    rec = records.get_record(host, model, res_id)
    p = records.find_partner(host, email)
    removed = records.unfollow(host, rec, p)
    click.echo(f"{p.email} {'no longer follows' if removed else 'did not follow'} {model},{rec.id}")


# --- messages ----------------------------------------------------------------------

@cli.group()
def message():
    """Chatter messages."""


@message.command("post")
@click.argument("model")
@click.argument("res_id")
@click.option("--body", required=True)
@click.option("--subject")
@click.option("--author", help="Author email (a partner's, or a raw address).")
@click.option("--partner", "partners", multiple=True, help="Notify this partner too (repeatable).")
@click.option("--note", is_flag=True, help="Internal note: notifies only --partner recipients.")
@click.option("--attach", "attach", multiple=True, metavar="FILE",
              help="Attach this file (repeatable; at most attachment_max_size each).")
@click.option("--subtype", help="What the post is about (see `record subtypes`); default discussion.")
@click.pass_context
def message_post(ctx, model, res_id, body, subject, author, partners, note, attach, subtype):
    """Post on a record's chatter; followers are notified."""
    host = get_host(ctx)
    rec = records.get_record(host, model, res_id)
    author_partner, email_from = api.resolve_author(host, author or None)
    ids = [records.find_partner(host, e).id for e in partners]
    msg = chatter.post_message(host, rec, body, subject=subject, author=author_partner,
                               email_from=email_from, partner_ids=ids, note=note, attachments=attach,
                               subtype=subtype)
    created("message", msg.id)


@message.command("show")
@click.argument("message_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def message_show(ctx, message_id, as_json):
    """A message and its notifications (recipient, status, failure type and reason)."""
    host = get_host(ctx)
    msg = chatter.get_message(host, message_id)
    notes = chatter.notification_rows(msg)
    files = attachments.describe(attachments.of("message", msg.id))
    data = {"id": msg.id, "model": msg.model, "res_id": msg.record_id, "subject": msg.subject,
            "author": msg.email_from, "type": msg.message_type, "note": msg.is_internal,
            "message_id": msg.message_id, "date": msg.created_at, "envelope": chatter.envelope(msg),
            "notifications": notes, "attachments": files}
    if as_json:
        click.echo(to_json(data))
        return
    fields(data, False)
    click.echo("")
    click.echo(table(notes, ["email", "channel", "status", "failure_type", "failure_reason"], "(no recipients)"))
    if files:
        click.echo("")
        click.echo(table(files, ["id", "name", "mimetype", "size", "content_id"]))


@message.command("preview")
@click.argument("message_id")
@click.pass_context
def message_preview(ctx, message_id):
    """What a recipient of this message's email notifications gets: subject, HTML and
    text, in the record type's layout."""
    host = get_host(ctx)
    msg = chatter.get_message(host, message_id)
    rec = msg.record if msg.record_id else None
    body = template_store.notification_body(host, msg, rec)
    from postroom.core.html import to_text
    subject = msg.subject or (f"Re: {rec.name}" if rec is not None else "")
    click.echo(f"Subject: {subject}\nFrom: {msg.email_from or '(the default sender)'}\n")
    click.echo(to_text(body))
    click.echo("\n--- HTML ---\n" + body)


# --- templates ---------------------------------------------------------------------

def _read_template_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(templates.MAX_TEMPLATE_SIZE + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


@cli.group()
def template():
    """Jinja2 templates (sandboxed): named mail templates and notification layouts."""


@template.command("add")
@click.argument("name")
@click.option("--subject", required=True, help="Subject template, e.g. 'Invoice {{ number }}'.")
@click.option("--body-file", required=True, help="The HTML body template (UTF-8).")
@click.pass_context
def template_add(ctx, name, subject, body_file):
    """Save (or replace) the named template; refused when it does not compile."""
    row = template_store.add(get_host(ctx), name, subject, _read_template_file(body_file))
    created(f"template {row.name}", row.id)


@template.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def template_list(ctx, as_json):
    """Named templates and the layouts set per record type."""
    get_host(ctx)
    show(template_store.listing(), ["kind", "name", "subject", "updated_at"], as_json)


@template.command("show")
@click.argument("name")
@click.pass_context
def template_show(ctx, name):
    """A named template's subject and body source."""
    row = template_store.get(get_host(ctx), name)
    click.echo(f"Subject: {row.subject}\n\n{row.body}")


@template.command("preview")
@click.argument("name")
@click.option("--var", "pairs", multiple=True, metavar="KEY=VALUE", help="A value the template uses (repeatable).")
@click.pass_context
def template_preview(ctx, name, pairs):
    """Render the named template with these values (subject, text, HTML); `recipient` is a
    sample one unless given, as `mail send` gives the real one."""
    values = {"recipient": {"name": "Ann Example", "email": "ann@example.com"}} | templates.parse_vars(pairs)
    subject, body = template_store.render_mail(get_host(ctx), name, values)
    from postroom.core.html import to_text
    click.echo(f"Subject: {subject}\n\n{to_text(body)}\n\n--- HTML ---\n{body}")


@template.command("remove")
@click.argument("name")
@click.pass_context
def template_remove(ctx, name):
    """Delete the named template."""
    template_store.remove(get_host(ctx), name)
    click.echo(f"template {name} removed")


@template.command("set-layout")
@click.argument("model")
@click.argument("file", required=False)
@click.option("--reset", is_flag=True, help="Go back to the default layout.")
@click.pass_context
def template_set_layout(ctx, model, file, reset):
    """The layout of MODEL's email notifications (names: body, record, message)."""
    host = get_host(ctx)
    if reset:
        template_store.reset_layout(host, model)
        click.echo(f"{model}: default layout")
        return
    if not file:
        raise InvalidInput("give the layout FILE, or --reset")
    template_store.set_layout(host, model, _read_template_file(file))
    click.echo(f"{model}: layout set from {file}")


# --- attachments -------------------------------------------------------------------

@cli.group()
def attachment():
    """Files attached to messages, mails and campaigns."""


@attachment.command("export")
@click.argument("attachment_id")
@click.option("--output", "-o", "output", default=".", show_default=True,
              help="File to write, or a folder to write the attachment's own name in.")
@click.pass_context
def attachment_export(ctx, attachment_id, output):
    """Write an attachment's exact bytes to a file."""
    row, path = attachments.export(get_host(ctx), attachment_id, output)
    click.echo(f"attachment {row.id} ({row.size} bytes, {row.mimetype}) written to {path}")


# --- scheduled actions ---------------------------------------------------------------

@cli.group()
def cron():
    """Scheduled actions."""


@cron.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def cron_list(ctx, as_json):
    """Scheduled actions of the core and enabled plugins."""
    show(scheduler.listing(get_host(ctx)),
         ["name", "interval", "nextcall", "active", "running", "failure_count", "last_result"], as_json)


@cron.command("run")
@click.argument("name")
@click.pass_context
def cron_run(ctx, name):
    """Run an action now (not recommended: it may interrupt a workflow)."""
    click.echo("warning: running a scheduled action by hand is not recommended; it can disturb the "
               "work of the scheduled runs and will not speed up large queues", err=True)
    result = scheduler.run_by_hand(get_host(ctx), name)
    if result["error"]:
        raise click.ClickException(f"{result['name']} failed: {result['error']}")
    click.echo(f"{result['name']}: done {result['done']}, remaining {result['remaining']} "
               f"in {result['duration']:.2f}s")


@cron.command("set-interval")
@click.argument("name")
@click.argument("interval")
@click.pass_context
def cron_set_interval(ctx, name, interval):
    """Set an action's interval, e.g. 15m, 1h, 1d (floor: 5m)."""
    action, warning = scheduler.set_interval(get_host(ctx), name, interval)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"{action.name}: every {scheduler.interval_text(action.interval_number, action.interval_type)}")


@cron.command("enable")
@click.argument("name")
@click.pass_context
def cron_enable(ctx, name):
    """Reactivate an action (and reset its failure count)."""
    click.echo(f"{scheduler.set_active(get_host(ctx), name, True).name}: active")


@cron.command("disable")
@click.argument("name")
@click.pass_context
def cron_disable(ctx, name):
    """Deactivate an action."""
    click.echo(f"{scheduler.set_active(get_host(ctx), name, False).name}: inactive")


# --- doctor ------------------------------------------------------------------------

@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def doctor(ctx, as_json):
    """Walk the troubleshooting steps: ok / warn / fail, finding, remedy; exit 1 on a fail."""
    from postroom.core import doctor as checks
    host = get_host(ctx)
    results = checks.run_checks(host)
    try:  # the console's doctor page shows the last run; the report comes first regardless
        checks.save_run(host, results, "postroom doctor")
    except Exception as exc:  # noqa: BLE001 - e.g. a database the doctor just found broken
        host.log.warning("doctor: results not kept for the console: %s", exc)
    if as_json:
        click.echo(to_json({"checks": [c.as_dict(source) for source, c in results],
                            "summary": checks.summary(results)}))
    else:
        click.echo("\n".join(checks.report_lines(results)))
    if checks.summary(results)["fail"]:
        ctx.exit(1)


# --- serve -------------------------------------------------------------------------

@cli.command()
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes on this machine (they share the queues through the database).")
@click.option("--role", type=click.Choice(["all", "scheduler", "inbound", "http"]), default="all", show_default=True,
              help="scheduler: scheduled actions only; inbound: plugin services only (the gateway); "
                   "http: the HTTP service only.")
@click.pass_context
def serve(ctx, workers, role):
    """Run due scheduled actions and plugin services until Ctrl-C or SIGTERM."""
    from postroom.core import serve as serving
    from postroom.core.errors import InvalidInput
    if workers > 1 and role == "http":
        # K HTTP listeners would fight over one port; the service has its own thread pool.
        raise InvalidInput("--role http runs one HTTP service per machine (its threads serve the "
                           "requests); use --workers with --role scheduler, inbound or all")
    host = get_host(ctx)
    if workers > 1:
        host.db.close()  # the children open their own connections
        sys.exit(serving.supervise(ctx.find_root().params.get("config"), workers, role, host.log))
    serving.serve(host, role=role, announce=True)


@cli.group()
def http():
    """The HTTP service (health, the plugins' endpoints, the operator console)."""


@http.command("serve")
@click.option("--host", "bind_host", help="Address to listen on (default: http_host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: http_port, 8025; 0: any free port).")
@click.pass_context
def http_serve(ctx, bind_host, port):
    """Run the HTTP service alone, in the foreground, until Ctrl-C or SIGTERM."""
    from postroom.core import serve as serving
    from postroom.core.http_service import HttpService
    host = get_host(ctx)
    service = HttpService(host, bind_host=bind_host, port=port, announce=True)
    serving.serve(host, role="http", announce=True, http_service=service)


from postroom.core.console.commands import operator  # noqa: E402 - a core group of its own module

cli.add_command(operator)


def main():
    try:
        cli(prog_name="postroom")
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`postroom queue list | head`): end quietly, like cat does.
        # Point stdout at devnull so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)  # 128 + SIGPIPE, what a shell reports for a killed writer


if __name__ == "__main__":
    main()
