"""`postroom helpdesk`: the plugin's command group, added by `postroom_cli_commands`."""
import click

from postroom import pass_host
from postroom.core.output import show

from . import tickets


@click.group()
def helpdesk():
    """Helpdesk tickets (create them with: postroom record create helpdesk.ticket NAME)."""


@helpdesk.command("tickets")
@click.option("--json", "as_json", is_flag=True)
@pass_host
def tickets_list(host, as_json):
    """List tickets: number, id, name and how many messages their chatter holds."""
    rows = tickets.list_tickets(host)
    show(rows, ["number", "id", "name", "messages", "created_at"], as_json)
