"""`postroom helpdesk`: the plugin's command group, added by `postroom_cli_commands`."""
import click

from postroom.cli import get_host
from postroom.core.output import show

from . import tickets


@click.group()
def helpdesk():
    """Helpdesk tickets (create them with: postroom record create helpdesk.ticket NAME)."""


@helpdesk.command("tickets")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tickets_list(ctx, as_json):
    """List tickets: number, id, name and how many messages their chatter holds."""
    rows = tickets.list_tickets(get_host(ctx))
    show(rows, ["number", "id", "name", "messages", "created_at"], as_json)
