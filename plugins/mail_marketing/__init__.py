"""mail_marketing: mailing lists, contacts, blacklist, campaigns, their ordered process
queue and one trace per recipient. Mass mail leaves through mail_queue's "mail" service as
bulk mail; what comes back (sent, failed, bounced, replied, unsubscribed) arrives by hooks."""
import os

from postroom.core.plugins import PluginInfo, hookimpl
from postroom.core.records import RecordType
from postroom.core.scheduler import ActionSpec

from . import hookspecs, settings

PLUGIN = PluginInfo("mail_marketing", "Mailing lists, blacklist, campaigns sent in order through "
                    "their own process queue, traces per recipient", requires=("mail_queue",),
                    hookspecs=hookspecs, config=settings.KEYS)


@hookimpl
def postroom_models():
    from .models import MODELS
    return MODELS


@hookimpl
def postroom_migrations():
    return ("mail_marketing", os.path.join(os.path.dirname(__file__), "migrations"))


@hookimpl
def postroom_record_types(register):
    register(RecordType("mailing.campaign", "Mass mailing campaign"))


@hookimpl
def postroom_scheduled_actions():
    from .campaigns import ACTION_CODE
    from .process import run_action
    return [ActionSpec(ACTION_CODE, "Mail Marketing: Process queue", run_action,
                       interval_number=1, interval_type="days", priority=20)]


@hookimpl
def postroom_cli_commands(cli):
    from .commands import blacklist, campaign, mailing_list
    for group in (mailing_list, blacklist, campaign):
        cli.add_command(group)


@hookimpl
def postroom_http_routes(host, register):
    from . import console
    from .web import register_routes
    register_routes(register)   # public: one-click unsubscribe
    console.register(register)  # console screens: the marketing queue, campaigns


# The hooks below are declared by other plugins (mail_queue's outcomes, inbound's bounces,
# addresses and replies): optionalhook, so that this plugin loads without them.
@hookimpl(optionalhook=True)
def postroom_mail_sent(host, mails):
    from .feedback import mails_sent
    mails_sent(host, mails)


@hookimpl(optionalhook=True)
def postroom_mail_failed(host, mails):
    from .feedback import mails_failed
    mails_failed(host, mails)


@hookimpl(optionalhook=True)
def postroom_bounce_received(host, bounce):
    from .feedback import bounce_received
    bounce_received(host, bounce)


@hookimpl(optionalhook=True)
def postroom_inbound_recipient(host, local_part, domain):
    from .feedback import recipient_handler
    return recipient_handler(host, local_part, domain)


@hookimpl(optionalhook=True)
def postroom_inbound_reply(host, references, message, dry_run):
    from .feedback import reply_record
    return reply_record(host, references, dry_run)


@hookimpl
def postroom_vacuum(host, batch_size, dry_run):
    from .maintenance import vacuum
    return vacuum(host, batch_size, dry_run)


@hookimpl
def postroom_doctor_checks(host):
    from .maintenance import doctor_checks
    return doctor_checks(host)


@hookimpl
def postroom_metrics(host):
    from .metrics import families
    return families(host)
