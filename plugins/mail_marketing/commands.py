"""`postroom list …`, `postroom blacklist …`, `postroom campaign …`."""
import os
import sys

import click

from postroom.core.context import get_host
from postroom.core.output import created, fields, show, table, to_json

from . import campaigns, lists, process


@click.group("list")
def mailing_list():
    """Mailing lists and their contacts."""


@mailing_list.command("create")
@click.argument("name")
@click.pass_context
def list_create(ctx, name):
    """Create an empty mailing list."""
    created("list", lists.create_list(get_host(ctx), name).id)


@mailing_list.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def list_import(ctx, name, file):
    """Import contacts from a CSV (columns email,name). Bad rows are skipped and reported
    with their line numbers; a file that cannot be read imports nothing."""
    host = get_host(ctx)
    size = os.path.getsize(file)
    with open(file, "rb") as fh:
        if sys.stderr.isatty():
            with click.progressbar(length=size, label=f"importing {os.path.basename(file)}",
                                   file=sys.stderr) as bar:
                result = lists.import_contacts(host, name, fh, on_bytes=bar.update)
        else:
            result = lists.import_contacts(host, name, fh)
    for line in result["errors"]:
        click.echo(f"skipped {line}", err=True)
    if result["bad"] > len(result["errors"]):
        click.echo(f"skipped {result['bad'] - len(result['errors'])} more bad rows", err=True)
    click.echo(f"imported {result['imported']}, merged {result['merged']} duplicates, "
               f"skipped {result['bad']} bad rows")


@mailing_list.command("show")
@click.argument("name")
@click.option("--limit", default=50, show_default=True, help="Contacts to list.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_show(ctx, name, limit, as_json):
    """A list's counts and its first contacts."""
    get_host(ctx)
    mlist = lists.get_list(get_host(ctx), name)
    data = lists.list_summary(mlist)
    data["contacts_shown"] = lists.list_contacts(mlist, max(0, limit))
    if as_json:
        click.echo(to_json(data))
        return
    fields(data, False, ["id", "name", "contacts", "opted_out", "blacklisted", "created_at"])
    click.echo("")
    click.echo(table(data["contacts_shown"], ["id", "email", "name", "opted_out", "blacklisted"],
                     "(no contacts)"))


@mailing_list.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_list(ctx, as_json):
    """Every mailing list with its counts."""
    get_host(ctx)
    show(lists.all_lists(), ["id", "name", "contacts", "opted_out", "blacklisted"], as_json)


@mailing_list.command("optout")
@click.argument("name")
@click.argument("email")
@click.pass_context
def list_optout(ctx, name, email):
    """Opt EMAIL out of the list NAME (it stays on the list, and gets no campaign from it)."""
    changed = lists.opt_out(get_host(ctx), name, email)
    click.echo(f"{email.strip().lower()} {'opted out of' if changed else 'was already opted out of'} {name}")


@click.group()
def blacklist():
    """Addresses that never receive a campaign."""


@blacklist.command("add")
@click.argument("email")
@click.option("--reason", default="", help="Why (shown in the listing).")
@click.pass_context
def blacklist_add(ctx, email, reason):
    """Blacklist EMAIL."""
    added = lists.blacklist_add(get_host(ctx), email, reason)
    click.echo(f"{email.strip().lower()} {'blacklisted' if added else 'was already blacklisted'}")


@blacklist.command("remove")
@click.argument("email")
@click.pass_context
def blacklist_remove(ctx, email):
    """Take EMAIL off the blacklist."""
    lists.blacklist_remove(get_host(ctx), email)
    click.echo(f"{email.strip().lower()} removed from the blacklist")


@blacklist.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def blacklist_list(ctx, as_json):
    """Blacklisted addresses with the reason."""
    get_host(ctx)
    show(lists.blacklist_rows(), ["email", "reason", "created_at"], as_json)


@click.group()
def campaign():
    """Mass mailing campaigns and their process queue."""


@campaign.command("create")
@click.option("--subject", required=True)
@click.option("--body-file", required=True, type=click.Path(dir_okay=False),
              help="The HTML body (UTF-8); the text part is derived from it.")
@click.option("--list", "list_names", multiple=True, required=True, help="Recipient list (repeatable).")
@click.option("--from", "email_from", help="Sender (default: marketing_email_from, else catchall@domain).")
@click.option("--attach", "attach", multiple=True, metavar="FILE",
              help="Attach this file to every recipient's mail (repeatable; stored once).")
@click.option("--track", help="opens, clicks or opens,clicks: record each recipient's first open "
              "(a pixel) and click (links through Postroom). Off by default: a privacy choice.")
@click.pass_context
def campaign_create(ctx, subject, body_file, list_names, email_from, attach, track):
    """Create a draft campaign; prints its id."""
    body = campaigns.read_body(body_file)
    created("campaign", campaigns.create_campaign(get_host(ctx), subject, body, list_names, email_from,
                                                  files=attach, track=track).id)


@campaign.command("send")
@click.argument("campaign_id")
@click.pass_context
def campaign_send(ctx, campaign_id):
    """Queue a draft campaign now."""
    c = campaigns.send(get_host(ctx), campaign_id)
    click.echo(f"campaign {c.id} is in the queue: `postroom serve` sends it (the process queue was "
               f"triggered); without a running serve, send it by hand with `postroom cron run "
               f"\"Mail Marketing: Process queue\"`, then `postroom queue process`")


@campaign.command("schedule")
@click.argument("campaign_id")
@click.option("--at", "at", required=True, help="ISO time, e.g. 2026-12-01T09:00 (UTC unless an offset is given).")
@click.pass_context
def campaign_schedule(ctx, campaign_id, at):
    """Queue a draft campaign for a time."""
    c, warning = campaigns.schedule(get_host(ctx), campaign_id, at)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"campaign {c.id} is in the queue for {c.scheduled_at:%Y-%m-%d %H:%M} UTC")


@campaign.command("cancel")
@click.argument("campaign_id")
@click.pass_context
def campaign_cancel(ctx, campaign_id):
    """Take a queued campaign out of the queue (back to draft)."""
    c = campaigns.cancel(get_host(ctx), campaign_id)
    click.echo(f"campaign {c.id} is back to draft and out of the queue")


@campaign.command("test")
@click.argument("campaign_id")
@click.option("--to", "to", required=True, help="Where the test copy goes.")
@click.pass_context
def campaign_test(ctx, campaign_id, to):
    """Send one test copy now; nothing is recorded as sent."""
    message_id = campaigns.send_test(get_host(ctx), campaign_id, to)
    click.echo(f"test copy of campaign {campaign_id} to {to} handed to the mail queue to leave at once "
               f"({message_id}); if it does not arrive, see: postroom queue list")


@campaign.command("show")
@click.argument("campaign_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def campaign_show(ctx, campaign_id, as_json):
    """State, counts and ratios of a campaign."""
    host = get_host(ctx)
    data = campaigns.describe(host, campaigns.get_campaign(host, campaign_id))
    if as_json:
        click.echo(to_json(data))
        return
    data["lists"] = ", ".join(data["lists"])
    for key in ("sent", "canceled", "error", "bounced", "replied", "opened", "clicked"):
        data[key] = f"{data[key]} ({data[key + '_ratio']}%)"
    data["canceled_by_reason"] = ", ".join(f"{k} {v}" for k, v in sorted(data["canceled_by_reason"].items())) or "-"
    fields(data, False, ["id", "subject", "state", "email_from", "lists", "record", "created_at",
                         "scheduled_at", "started_at", "done_at", "expected", "pending", "outgoing",
                         "sent", "canceled", "canceled_by_reason", "error", "bounced", "replied"]
           + (["track", "opened", "clicked"] if data["track"] else []) + ["last_error"])


@campaign.command("retry-failed")
@click.argument("campaign_id")
@click.pass_context
def campaign_retry_failed(ctx, campaign_id):
    """Re-queue only the recipients whose trace is `error`."""
    n = campaigns.retry_failed(get_host(ctx), campaign_id)
    click.echo(f"campaign {campaign_id}: {n} failed recipients re-queued")


@campaign.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def campaign_list(ctx, as_json):
    """Campaigns in order of creation."""
    get_host(ctx)
    show(campaigns.campaign_rows(), ["id", "subject", "state", "created_at", "scheduled_at", "sent"], as_json)


@campaign.command("queue")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def campaign_queue(ctx, as_json):
    """The marketing queue in processing order: the head, how long it has been there, errors."""
    rows = process.queue_rows(get_host(ctx))
    show(rows, ["position", "id", "subject", "state", "head", "due", "at_head_for", "processed",
                "remaining", "errors", "last_error"], as_json, "(the marketing queue is empty)")
