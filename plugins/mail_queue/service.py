"""mail_queue's "mail" service: `postroom.core.services.MailService`, implemented.

The contract (what each method promises) is written in core/services.py, where the
plugins that use it read it; this module only maps it onto the queue.
"""
from . import actions, queue, sending
from .models import OutgoingMail
from .settings import ACTION_CODE, chunks

# The failure types of ours that mean the deployment cannot send (see
# MailService.deployment_failures), with what the operator should do about each.
DEPLOYMENT_FAILURES = {
    "mail_limit": "the daily limit was reached: wait for tomorrow and retry, or send through an "
                  "outgoing server of your own",
    "mail_smtp": "the SMTP server refused or failed: read its words with `postroom message show {mid}` "
                 "and fix the server settings",
    "mail_from_invalid": "the sender address is refused: set a valid one (e.g. `postroom admin "
                         "set-email`) and make sure your server may send for its domain",
    "mail_from_missing": "mail has no sender address: set one (e.g. `postroom admin set-email`)",
}


class QueueMailService:
    """The "mail" service backed by `OutgoingMail` rows (published by mail_queue)."""

    deployment_failures = DEPLOYMENT_FAILURES

    def __init__(self, host):
        self.host = host

    def enqueue(self, mails) -> list[int]:
        return queue.enqueue(self.host, list(mails))

    def trigger_queue(self, at=None) -> None:
        from postroom.core import scheduler
        with self.host.transaction():
            scheduler.trigger(self.host, ACTION_CODE, at)

    def process_queue(self, limit=None) -> dict:
        return sending.process_queue(self.host, limit=limit)

    def send_now(self, ids) -> dict:
        return sending.send_ids(self.host, ids, force=True)

    def retry(self, refs) -> set[str]:
        refs = {str(r) for r in refs}
        actions.retry(self.host, refs=refs)
        live = set()
        for chunk in chunks(sorted(refs)):
            live |= {r for (r,) in OutgoingMail.select(OutgoingMail.ref).where(
                OutgoingMail.ref.in_(chunk) & OutgoingMail.state.in_(("outgoing", "sent"))).tuples()}
        return live
