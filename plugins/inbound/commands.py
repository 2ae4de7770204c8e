"""CLI of the inbound plugin: `inbound serve|deliver|log|export`, `alias add|list|remove`,
`route test`."""
import os
import sys
import threading

import click
import peewee as pw

from postroom.core.context import get_host
from postroom.core.errors import DatabaseUnavailable, first_line
from postroom.core.output import created, show, to_json

from . import aliases, decisions, pipe, routing
from .models import CONTACT_POLICIES, REQUIRE_AUTH
from .settings import settings


@click.group()
def inbound():
    """The inbound mail gateway: serve, pipe delivery, decision log, originals."""


@inbound.command("serve")
@click.option("--host", "bind_host", help="Address to listen on (default: inbound_host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: inbound_port, 2525).")
@click.option("--lmtp/--smtp", default=None, help="Speak LMTP (behind Postfix/Dovecot) or SMTP "
              "(default: inbound_lmtp, else SMTP).")
@click.pass_context
def inbound_serve(ctx, bind_host, port, lmtp):
    """Run the gateway in the foreground until Ctrl-C or SIGTERM."""
    import signal
    from .gateway import GatewayService
    host = get_host(ctx)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    service = GatewayService(host, bind_host, port, lmtp)
    try:
        service.start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {service.bind_host}:{service.port}: {exc.strerror or exc}")
    click.echo(f"{service.name}: listening (Ctrl-C to stop)")
    try:
        stop.wait()
    finally:
        service.stop()


@inbound.command("deliver")
@click.option("--recipient", "rcpts", multiple=True, help="Envelope recipient (repeatable); "
              "default: Delivered-To/X-Original-To, else our addresses in To/Cc.")
@click.option("--sender", default="", help="Envelope sender (the MTA's ${sender}).")
@click.pass_context
def inbound_deliver(ctx, rcpts, sender):
    """Deliver one message from stdin (an MTA pipe transport). Exit codes: 0 accepted,
    67 unknown recipient, 65 bad message, 75 temporary failure (retry)."""
    try:
        host = get_host(ctx)
        # Never more than the size limit in memory: one byte past it is enough to refuse.
        data = sys.stdin.buffer.read(settings(host).max_size + 1)
        code, line = pipe.deliver(host, data, rcpts, sender)
    except (pw.OperationalError, pw.InterfaceError, DatabaseUnavailable) as exc:
        code, line = pipe.EX_TEMPFAIL, f"451 4.3.0 database unavailable: {first_line(exc) or type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - an MTA must retry, not bounce, on our own failure
        code, line = pipe.EX_TEMPFAIL, f"451 4.3.0 temporary local problem: {type(exc).__name__}: {exc}"
    click.echo(line, err=code != 0)
    sys.exit(code)


# Postfix's pipe(8) runs it: a failure of the deployment itself (config, database, plugin
# not enabled) must defer the mail (exit 75), never bounce it (see postroom_cli_commands).
inbound_deliver.mta_pipe = True


@inbound.command("log")
@click.option("--sender", help="Only mail from this address (From header or envelope).")
@click.option("--recipient", help="Only mail to an address containing this.")
@click.option("--verdict", type=click.Choice(["accepted", "refused", "tempfail"]))
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def inbound_log(ctx, sender, recipient, verdict, limit, as_json):
    """Why was this mail (not) received? The latest gateway decisions, newest last."""
    rows = decisions.rows(get_host(ctx), sender=sender, limit=limit, recipient=recipient, verdict=verdict)
    show(rows, ["id", "time", "peer", "sender", "recipients", "message_id", "verdict", "code", "reason"],
         as_json)


@inbound.command("export")
@click.argument("log_id")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File to write (default: inbound-ID.eml).")
@click.pass_context
def inbound_export(ctx, log_id, output):
    """Write the original of an accepted delivery (ID from `inbound log`) as an .eml file."""
    original = decisions.original_of(get_host(ctx), log_id)
    path = output or f"inbound-{int(log_id)}.eml"
    with open(path, "wb") as fh:
        fh.write(bytes(original.content))
    click.echo(f"wrote {os.path.abspath(path)} ({original.size} bytes)")


@click.group()
def alias():
    """Addresses that open records (or post on a fixed one)."""


@alias.command("add")
@click.argument("local_part")
@click.option("--model", required=True, help="Record type to create (see `record types`).")
@click.option("--record", "record_id", type=int, help="Post on this record instead of creating one.")
@click.option("--contact", type=click.Choice(CONTACT_POLICIES), default="everyone", show_default=True,
              help="Who may write: everyone, known partners, or followers of --record.")
@click.option("--defaults", help="JSON object of values for created records.")
@click.option("--require-auth", "require_auth", type=click.Choice(REQUIRE_AUTH),
              help="dmarc: only senders whose From passes DMARC; none: no check. Default: dmarc for "
                   "followers/partners when the sender's domain publishes p=quarantine or reject.")
@click.pass_context
def alias_add(ctx, local_part, model, record_id, contact, defaults, require_auth):
    """Add an alias LOCALPART on the deployment's domains."""
    created("alias", aliases.add_alias(get_host(ctx), local_part, model, record_id, contact, defaults,
                                       require_auth).id)


@alias.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def alias_list(ctx, as_json):
    """Aliases with their record type, fixed record and contact policy."""
    show(aliases.alias_rows(get_host(ctx)), ["id", "address", "model", "record_id", "contact", "require_auth"],
         as_json)


@alias.command("remove")
@click.argument("local_part")
@click.pass_context
def alias_remove(ctx, local_part):
    """Remove an alias: mail to it is refused from now on."""
    aliases.remove_alias(get_host(ctx), local_part)
    click.echo(f"alias {local_part} removed")


@click.group()
def route():
    """What the gateway would do with a mail."""


@route.command("test")
@click.argument("address")
@click.option("--in-reply-to", "in_reply_to", help="Message-Id the mail answers.")
@click.option("--from", "from_", default="", help="Sender address (From and envelope).")
@click.option("--subject", default="", help="Subject (the name of a record an alias would create).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def route_test(ctx, address, in_reply_to, from_, subject, as_json):
    """Say what the gateway would answer for ADDRESS, without sending or storing anything."""
    result = routing.explain(get_host(ctx), address, in_reply_to=in_reply_to, sender=from_, subject=subject)
    if as_json:
        click.echo(to_json(result))
    else:
        click.echo(f"RCPT: {result['rcpt']}")
        if result.get("route"):
            click.echo(f"route: {result['route']}")
            click.echo(f"DATA: {result['data']}")


COMMANDS = [inbound, alias, route]
