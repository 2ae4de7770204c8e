"""The bottom of mail_queue: the queue action's names and the settings every other module
reads. It imports nothing from the plugin, so any module may import it."""
import datetime as dt

ACTION_CODE = "mail_queue.process"
ACTION_NAME = "Mail: Email Queue Manager"
# Chunking is the core's (one size everywhere); re-exported for the plugin's modules.
from postroom.core.db import CHUNK, chunks  # noqa: F401


def lifetime(host) -> dt.timedelta:
    """How long a mail keeps being retried after temporary failures (`mail_lifetime_days`)."""
    return dt.timedelta(days=host.config.getfloat("mail_lifetime_days", 5.0))


def lease(host) -> dt.timedelta:
    """How long a claim holds its mails (`mail_lease_seconds`) before another worker may
    take them over; a working worker renews it."""
    return dt.timedelta(seconds=host.config.getfloat("mail_lease_seconds", 300.0))


def batch_size(host) -> int:
    """Mails claimed at once (`mail_batch_size`)."""
    return max(1, host.config.getint("mail_batch_size", 200))

# res_model of the attachments a direct mail (`mail send --attach`) holds itself.
ATTACHMENT_HOLDER = "mail_queue.mail"
