"""Helpdesk tickets for Postroom: an example of a third-party plugin.

Postroom finds this module through the `postroom.plugins` entry point in setup.cfg. Nothing
here runs until an operator enables the plugin (`postroom plugins enable helpdesk`); from
then on the hooks below are called. Every hook is documented in Postroom's
`core/hookspecs.py` (and a plugin's own hooks in its `hookspecs.py`): an implementation is
a module-level function with the hook's name, decorated with `hookimpl`, taking any subset
of the hook's arguments. What a plugin may import is what `postroom` exports.
"""
from postroom import PluginInfo, RecordType, hookimpl

from . import tickets

PLUGIN = PluginInfo("helpdesk", "Helpdesk tickets: a numbered record type with a chatter")


@hookimpl
def postroom_record_types(register):
    """`helpdesk.ticket` records get a chatter and followers like any other record."""
    register(RecordType(tickets.MODEL, "Helpdesk ticket"))


@hookimpl
def postroom_record_created(host, record, values):
    """Number every new ticket (HD-00001, HD-00002, ...); other record types pass by."""
    if record.model == tickets.MODEL:
        tickets.assign_number(host, record)


@hookimpl
def postroom_cli_commands(cli):
    """`postroom helpdesk ...` exists only while the plugin is enabled."""
    from .commands import helpdesk  # imported late: the CLI is not needed to serve mail
    cli.add_command(helpdesk)


@hookimpl
def postroom_http_routes(register):
    """A console screen, `/helpdesk/`, with a "Helpdesk" entry in the navigation."""
    from . import screens
    screens.register(register)
