"""mail_queue: outgoing mail that never silently disappears.

Chatter notifications and other plugins' mails (through the "mail" service) become
`OutgoingMail` rows; person-to-person mail leaves right after commit, bulk mail waits for
`Mail: Email Queue Manager`. Servers, the daily limit, retries with backoff, and the
operator's queue commands live here too.
"""
import os

from postroom.core.plugins import PluginInfo, hookimpl
from postroom.core.scheduler import ActionSpec

from . import hookspecs, settings

PLUGIN = PluginInfo("mail_queue", "Outgoing mail: servers, queue, retries, daily limit, resend",
                    hookspecs=hookspecs, config=settings.KEYS)


@hookimpl
def postroom_models():
    from .models import MODELS
    return MODELS


@hookimpl
def postroom_migrations():
    return ("mail_queue", os.path.join(os.path.dirname(__file__), "migrations"))


@hookimpl
def postroom_scheduled_actions():
    from . import sending, settings
    return [ActionSpec(settings.ACTION_CODE, settings.ACTION_NAME, sending.handle_action,
                       interval_number=60, interval_type="minutes", priority=5,
                       # Every worker drains at once; row claims keep each mail to one.
                       parallel=True,
                       # Deactivating it would stop all bulk mail; doctor fails loudly instead.
                       deactivate_on_failures=False)]


@hookimpl
def postroom_configure(host):
    from postroom.core.services import MAIL
    from .service import QueueMailService
    host.provide(MAIL, QueueMailService(host))


@hookimpl
def postroom_email_channel(host):
    return True


@hookimpl
def postroom_message_posted(host, message, notified):
    from . import queue
    queue.on_message_posted(host, message, notified)


@hookimpl
def postroom_cli_commands(cli):
    from .commands import COMMANDS
    from .dkim_commands import dkim_group
    for command in COMMANDS + [dkim_group]:
        cli.add_command(command)


@hookimpl
def postroom_vacuum(host, batch_size, dry_run):
    from . import maintenance
    return maintenance.vacuum(host, batch_size, dry_run)


@hookimpl
def postroom_doctor_checks(host):
    from . import maintenance
    return maintenance.doctor_checks(host)


@hookimpl
def postroom_metrics(host):
    from .metrics import families
    return families(host)


@hookimpl
def postroom_http_routes(register):
    from . import console
    console.register(register)
