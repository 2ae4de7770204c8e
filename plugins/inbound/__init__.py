"""The inbound plugin: an SMTP/LMTP gateway (and pipe mode) that threads replies onto their
record, turns mail to an alias into a record, processes bounces and refuses the rest."""
import os

from postroom.core.plugins import PluginInfo, hookimpl

from . import hookspecs, settings

PLUGIN = PluginInfo("inbound", "Inbound SMTP/LMTP gateway: replies, aliases, bounces, 550 for the rest",
                    hookspecs=hookspecs, config=settings.KEYS)


@hookimpl
def postroom_models():
    from .models import MODELS
    return MODELS


@hookimpl
def postroom_migrations():
    return ("inbound", os.path.join(os.path.dirname(__file__), "migrations"))


@hookimpl
def postroom_cli_commands(cli):
    from .commands import COMMANDS
    for group in COMMANDS:
        cli.add_command(group)


@hookimpl
def postroom_serve(host, register):
    from .gateway import GatewayService
    register(GatewayService(host))


# optionalhook: mail_queue declares this hook; without mail_queue nothing asks.
@hookimpl(optionalhook=True)
def postroom_reply_to(host, record):
    from .aliases import reply_to
    return reply_to(host, record)


@hookimpl
def postroom_vacuum(host, batch_size, dry_run):
    from .decisions import vacuum
    from .settings import settings
    return vacuum(host, settings(host), batch_size, dry_run)


@hookimpl
def postroom_doctor_checks(host):
    from .doctor import checks
    return checks(host)


@hookimpl
def postroom_metrics(host):
    from .metrics import families
    return families(host)


@hookimpl
def postroom_http_routes(register):
    from . import console
    console.register(register)
