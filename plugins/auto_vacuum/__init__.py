"""auto_vacuum: the daily clean-up action that asks every plugin to vacuum its own data.

It owns no tables. `Base: Auto-vacuum internal data` runs daily and calls the
`postroom_vacuum` hook of every registered implementation in turn (enabled plugins, then
the core), each chunk in its own transaction; `postroom vacuum` runs the same by hand.
"""
from postroom.core.plugins import PluginInfo, hookimpl
from postroom.core.scheduler import ActionSpec

from . import settings

PLUGIN = PluginInfo("auto_vacuum", "Daily clean-up: every plugin removes its own redundant data",
                    config=settings.KEYS)
ACTION_CODE = "auto_vacuum.run"
ACTION_NAME = "Base: Auto-vacuum internal data"


def _run_action(host, run):
    from . import service
    service.run_action(host, run)


@hookimpl
def postroom_scheduled_actions():
    return [ActionSpec(ACTION_CODE, ACTION_NAME, _run_action, interval_number=1,
                       interval_type="days", priority=20)]


@hookimpl
def postroom_cli_commands(cli):
    from .commands import vacuum
    cli.add_command(vacuum)


@hookimpl
def postroom_doctor_checks(host):
    from . import service
    return [service.last_run_check(host)]
