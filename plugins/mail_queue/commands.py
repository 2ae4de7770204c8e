"""CLI of mail_queue: `mail`, `queue`, `server`, `limit`, and `message resend/ignore`."""
import sys

import click

from postroom.core import attachments, chatter, emails, template_store, templates
from postroom.core.context import get_host
from postroom.core.clock import parse_when
from postroom.core.errors import InvalidInput
from postroom.core.output import created, fields, show, to_json

from . import actions, daily_limit, queue, sending, servers, smtp_client
from .listing import mail_row, with_waits
from .models import STATES, OutgoingMail
from .settings import ACTION_NAME

# scheduled_at: when a mail sent with --at is due (the queue holds it until then).
LIST_COLUMNS = ["id", "state", "email_to", "subject", "scheduled_at", "attempts", "next_attempt_at",
                "failure_type", "failure_reason"]


# --- mail ----------------------------------------------------------------------------

@click.group("mail")
def mail():
    """Send mail directly (outside any chatter)."""


@mail.command("send")
@click.option("--to", "to", multiple=True, required=True, help="Recipient (repeatable): one mail each.")
@click.option("--subject", help="Subject (not with --template).")
@click.option("--body", help="Plain text body (not with --template).")
@click.option("--template", "template_name", help="A named template (postroom template add) for subject and body.")
@click.option("--var", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A value the template uses (repeatable); `recipient` (name, email) is given.")
@click.option("--from", "email_from", help="Sender (default: config mail_from / notifications@domain).")
@click.option("--bulk", is_flag=True, help="Wait for the Email Queue Manager instead of sending now.")
@click.option("--at", "at", help="Send at this time (ISO 8601, UTC unless an offset is given).")
@click.option("--auto-delete", is_flag=True,
              help="Delete the mail once sent, like chatter notifications (default: keep it, like "
                   "Odoo's directly created mails, so it can be shown and exported).")
@click.option("--attach", "attach", multiple=True, metavar="FILE",
              help="Attach this file (repeatable; at most attachment_max_size each).")
@click.pass_context
def mail_send(ctx, to, subject, body, email_from, bulk, at, auto_delete, attach, template_name, pairs):
    """Send a mail to each --to address (urgent unless --bulk or --at)."""
    host = get_host(ctx)
    if template_name and (subject or body):
        raise InvalidInput("--template gives the subject and body; do not add --subject or --body")
    if not template_name and not (subject and body):
        raise InvalidInput("give --subject and --body, or --template NAME")
    files = attachments.prepare(host, attach)
    for address in to:
        emails.split_address(address)
    if email_from:
        emails.split_address(email_from)
    when = parse_when(at) if at is not None else None
    contents = [_content(host, a, subject, body, template_name, pairs) for a in to]
    ids = queue.enqueue_with_files(
        host, [{"email_to": a, "subject": subj, "body_html": html,
                "email_from": email_from, "bulk": bulk or when is not None,
                "scheduled_at": when, "auto_delete": auto_delete} for a, (subj, html) in zip(to, contents)],
        files)
    states = {m.id: m for m in OutgoingMail.select().where(OutgoingMail.id.in_(ids))}
    failed = False
    for mail_id, address in zip(ids, to):
        m = states.get(mail_id)
        if m is not None and m.state == "exception":
            failed = True
            click.echo(f"mail to {address} failed: {m.failure_type}: {m.failure_reason}", err=True)
        elif m is not None and m.state == "outgoing" and m.next_attempt_at:
            click.echo(f"mail to {address} deferred until {m.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC: "
                       f"{m.failure_reason}", err=True)
        created(f"mail to {address}: " + (m.state if m is not None else "sent"), mail_id)
    if failed:
        sys.exit(1)


def _content(host, address, subject, body, template_name, pairs) -> tuple[str, str]:
    """(subject, HTML) for one recipient: the text given, or the named template rendered."""
    if not template_name:
        from postroom.core.html import text_to_html
        return subject, text_to_html(body)
    name, addr = emails.split_address(address)
    values = {"recipient": {"name": name, "email": addr}} | templates.parse_vars(pairs)
    return template_store.render_mail(host, template_name, values)


def _resend(ctx, message_id, only, fixes):
    host = get_host(ctx)
    msg = chatter.get_message(host, message_id)
    pairs = {}
    for fix in fixes:
        old, sep, new = fix.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise InvalidInput(f"--fix needs OLD=NEW, not {fix!r}")
        pairs[old.strip()] = new.strip()
    result = actions.resend(host, msg, only, pairs)
    click.echo(f"message {msg.id}: resent to {', '.join(result['resent']) or 'nobody'}"
               + (f"; ignored {', '.join(result['ignored'])}" if result["ignored"] else "")
               + f"; envelope {chatter.envelope(msg)}")


def _ignore(ctx, message_id, all_):
    host = get_host(ctx)
    if all_ == bool(message_id):
        raise InvalidInput("give a message id or --all (not both)")
    ids = actions.messages_with_failures() if all_ else [chatter.get_message(host, message_id).id]
    count = actions.ignore(host, ids)
    click.echo(f"ignored {count} failed notification(s) on {len(ids)} message(s)")


RESEND_OPTIONS = [
    click.argument("message_id"),
    click.option("--only", "only", multiple=True, help="Resend only to this failed recipient (repeatable)."),
    click.option("--fix", "fixes", multiple=True, help="OLD=NEW: correct a recipient's address first."),
]


def _with(options, fn):
    for option in reversed(options):
        fn = option(fn)
    return fn


def _resend_cmd():
    @click.pass_context
    def resend(ctx, message_id, only, fixes):
        """Send & close: resend MESSAGE_ID to its failed recipients (or --only some), ignore the rest."""
        _resend(ctx, message_id, only, fixes)
    return click.command("resend")(_with(RESEND_OPTIONS, resend))


def _ignore_cmd():
    @click.argument("message_id", required=False)
    @click.option("--all", "all_", is_flag=True, help="Every message with failed recipients.")
    @click.pass_context
    def ignore(ctx, message_id, all_):
        """Ignore all: failed notifications become canceled; the envelope turns white."""
        _ignore(ctx, message_id, all_)
    return click.command("ignore")(ignore)


mail.add_command(_resend_cmd())
mail.add_command(_ignore_cmd())


@click.group("message")
def message():
    """Chatter messages: resend and ignore failed recipients (merged into the core group)."""


message.add_command(_resend_cmd())
message.add_command(_ignore_cmd())


# --- queue ---------------------------------------------------------------------------

@click.group("queue")
def queue_group():
    """Outgoing mails (Odoo's Settings > Technical > Emails)."""


@queue_group.command("list")
@click.option("--state", type=click.Choice(STATES))
@click.option("--limit", type=int, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def queue_list(ctx, state, limit, as_json):
    """Mails in the queue, newest last (`--limit` keeps the newest)."""
    host = get_host(ctx)
    query = OutgoingMail.select().order_by(OutgoingMail.id.desc())
    if state:
        query = query.where(OutgoingMail.state == state)
    rows = [mail_row(m) for m in reversed(list(query.limit(limit)))]
    show(with_waits(host, rows), LIST_COLUMNS, as_json, "(the queue is empty)")


@queue_group.command("show")
@click.argument("mail_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def queue_show(ctx, mail_id, as_json):
    """Every field of one mail, with its failure details."""
    host = get_host(ctx)
    m = actions.get_mail(host, mail_id)
    [data] = with_waits(host, [mail_row(m)])
    data["headers"] = m.headers
    data["reply_to"] = m.reply_to
    data["in_reply_to"] = m.in_reply_to
    fields(data, as_json)


def _ids_or_fail(ids):
    if not ids:
        raise InvalidInput("give at least one mail id")
    return ids


@queue_group.command("retry")
@click.argument("ids", nargs=-1)
@click.option("--all-failed", is_flag=True, help="Every mail in exception.")
@click.pass_context
def queue_retry(ctx, ids, all_failed):
    """Put failed mails back to outgoing: they leave at the next queue run."""
    if bool(ids) == all_failed:
        raise InvalidInput("give mail ids or --all-failed (not both)")
    done = actions.retry(get_host(ctx), ids, all_failed)
    click.echo(f"{len(done)} mail(s) back to outgoing; sent at the next run of {ACTION_NAME!r}")


@queue_group.command("send-now")
@click.argument("ids", nargs=-1)
@click.pass_context
def queue_send_now(ctx, ids):
    """Send these outgoing mails now instead of waiting for the queue."""
    host = get_host(ctx)
    done = actions.send_now(host, _ids_or_fail(ids))
    rows = with_waits(host, [mail_row(m) for m in OutgoingMail.select().where(OutgoingMail.id.in_(done))],
                       due=False)
    gone = len(done) - len(rows)
    for r in rows:
        click.echo(f"mail {r['id']}: {r['state']}" + (f" ({r['failure_reason']})" if r["failure_reason"] else ""))
    if gone:
        click.echo(f"{gone} mail(s) sent and deleted (auto_delete)")
    if any(r["state"] != "sent" for r in rows):
        sys.exit(1)


@queue_group.command("cancel")
@click.argument("ids", nargs=-1)
@click.pass_context
def queue_cancel(ctx, ids):
    """Cancel mails (they will not be sent); their notifications become canceled."""
    done = actions.cancel(get_host(ctx), _ids_or_fail(ids))
    click.echo(f"{len(done)} mail(s) canceled")


@queue_group.command("export")
@click.argument("mail_id")
@click.pass_context
def queue_export(ctx, mail_id):
    """The mail as an .eml file on stdout (what is sent, byte for byte), for support."""
    data = actions.export(get_host(ctx), mail_id)
    click.echo(data, nl=False)  # bytes go to the binary stream untouched


@queue_group.command("process")
@click.option("--limit", type=int, help="At most this many mails.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def queue_process(ctx, limit, as_json):
    """Run the queue once now (what the Email Queue Manager does)."""
    result = sending.process_queue(get_host(ctx), limit=limit)
    if as_json:
        click.echo(to_json(result))
    else:
        click.echo(", ".join(f"{k} {v}" for k, v in result.items()))


# --- servers -------------------------------------------------------------------------

@click.group("server")
def server():
    """Outgoing SMTP servers."""


def _server_options(adding: bool):
    """The settings of a server, for `server add` (with defaults) and `server edit` (none:
    an option not given keeps the current value)."""
    options = [
        click.option("--host", "smtp_host", required=adding),
        click.option("--port", type=int, default=25 if adding else None, show_default=adding),
        click.option("--encryption", type=click.Choice(servers.ENCRYPTIONS, case_sensitive=False),
                     default="none" if adding else None, show_default=adding,
                     help="none is refused for AUTH unless the server is on loopback."),
        click.option("--user"),
        click.option("--password-env", help="Environment variable holding the password (never stored)."),
        click.option("--from-filter", help="Use this server for this sender address or domain."),
        click.option("--daily-limit", type=int, help="Count mail through it against this daily limit."),
    ]

    def apply(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn
    return apply


@server.command("add")
@click.argument("name")
@_server_options(adding=True)
@click.pass_context
def server_add(ctx, name, smtp_host, port, encryption, user, password_env, from_filter, daily_limit):
    """Add an outgoing server."""
    s = servers.add_server(get_host(ctx), name, smtp_host, port, encryption, user, password_env,
                           from_filter, daily_limit)
    created("server", s.id)


@server.command("edit")
@click.argument("name")
@_server_options(adding=False)
@click.pass_context
def server_edit(ctx, name, **changes):
    """Change an added server's settings (refused while a running queue sends through it)."""
    s = servers.edit_server(get_host(ctx), name, **changes)
    click.echo(f"server {s.name} changed: {s.host}:{s.port}, {s.encryption}")


@server.command("remove")
@click.argument("name")
@click.pass_context
def server_remove(ctx, name):
    """Remove an added server (refused while a running queue sends through it)."""
    servers.remove_server(get_host(ctx), name)
    click.echo(f"server {name} removed")


@server.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def server_list(ctx, as_json):
    """Servers, the config's default last (used when no other matches)."""
    host = get_host(ctx)
    rows = [dict(vars_of(s), default=False) for s in servers.added_servers(host)]
    rows.append(dict(vars_of(servers.default_server(host)), default=True))
    show(rows, ["name", "host", "port", "encryption", "user", "from_filter", "daily_limit", "default"], as_json)


def vars_of(s):
    return {"name": s.name, "host": s.host, "port": s.port, "encryption": s.encryption, "user": s.user,
            "password_env": s.password_env, "from_filter": s.from_filter, "daily_limit": s.daily_limit}


@server.command("test")
@click.argument("name", default=servers.DEFAULT_NAME)
@click.pass_context
def server_test(ctx, name):
    """Connect, EHLO (and TLS/login as configured) and print the server's answer."""
    import smtplib
    s = servers.get_server(get_host(ctx), name)
    try:
        answer = smtp_client.test_server(s)
    except (smtplib.SMTPException, OSError) as exc:
        click.echo(f"Error: server {s.label} failed: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    click.echo(f"server {s.label} answered:\n{answer}")


# --- limit ---------------------------------------------------------------------------

@click.command("limit")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def limit(ctx, as_json):
    """Today's count of emails through the default server, its daily limit, the reset time
    (and the same for added servers that have a limit of their own)."""
    statuses = daily_limit.limit_statuses(get_host(ctx))
    if as_json:
        click.echo(to_json(statuses[0] | {"servers": statuses}))
        return
    for status in statuses:
        where = "the default server" if status["server"] == servers.DEFAULT_NAME else f"server {status['server']}"
        click.echo(f"{status['count']} of {status['limit']} emails sent today ({status['day']} UTC) "
                   f"through {where}; {status['remaining']} left; the count resets at "
                   f"{status['resets_at']:%Y-%m-%d %H:%M} UTC")


COMMANDS = [mail, message, queue_group, server, limit]
