"""The "mail" service other plugins use: `host.service("mail")`.

This is a plugin contract, like a hook: keep it stable.
"""
from . import queue, sending
from .settings import ACTION_CODE, ACTION_NAME


class MailService:
    """Outgoing mail for other plugins (published by mail_queue as `host.service("mail")`).

    `enqueue(mails) -> list[int]`
        Insert mails set-based (multi-row INSERTs in chunks of 500), inside the caller's
        transaction when one is open (so they commit or roll back with the caller's rows).
        Returns the new mail ids, in order. Each mail is a dict:
          - `email_to` (required): `addr` or `Name <addr>`; a missing or invalid address is
            not refused here: the mail fails at send time with `mail_email_missing` /
            `mail_email_invalid`, so the enqueuer hears of it through `postroom_mail_failed`.
          - `subject`, `body_html` (the plain-text part is derived from the HTML).
          - `email_from`: default config `mail_from`, else the admin partner's real address,
            else `notifications@<primary domain>`.
          - `headers`: {name: value} of extra headers (List-Unsubscribe, Precedence, ...);
            headers Postroom writes itself (From, To, Subject, Message-Id, ...) are refused.
          - `ref`: a letters-and-digits key of yours (`mt123`) or None. It comes back in
            `postroom_mail_sent/failed`, and is the value of the signed bounce address
            (`core.tokens.bounce_address(host, ref)`); without it the value is
            `core.tokens.notification_token(notification_id)`, or `m<mail id>`.
          - `scheduled_at`: aware datetime or None; the queue action is triggered for it.
          - `message_id`: RFC 5322 `<left@right>`; generated when missing.
          - `notification_id`: the chatter notification this mail delivers, or None (its
            status then follows the mail: sent / exception / canceled).
          - `reply_to`: default the catchall address.
          - `auto_delete` (default True): delete the mail once sent.
          - `bulk` (default True): wait for `Mail: Email Queue Manager`; False sends right
            after the (caller's) transaction commits.
        CR/LF in any header-bound value (header injection) raises InvalidInput and nothing
        is inserted.
    `trigger_queue(at=None)`: ask the Email Queue Manager to run at `at` (default now).
    `process_queue(limit=None) -> dict`: run the queue once, now, in this process; returns
        counts `processed`, `sent`, `failed`, `retry`, `remaining`.
    `send_now(ids) -> dict`: send these outgoing mails now, due or not.

    Outcomes are announced after commit through `postroom_mail_sent(host, mails)` and
    `postroom_mail_failed(host, mails)` (see core/hookspecs.py for the dict shapes).
    """

    ACTION_CODE = ACTION_CODE
    ACTION_NAME = ACTION_NAME

    def __init__(self, host):
        self.host = host

    def enqueue(self, mails: list[dict]) -> list[int]:
        return queue.enqueue(self.host, list(mails))

    def trigger_queue(self, at=None) -> None:
        from postroom.core import scheduler
        with self.host.transaction():
            scheduler.trigger(self.host, ACTION_CODE, at)

    def process_queue(self, limit=None) -> dict:
        return sending.process_queue(self.host, limit=limit)

    def send_now(self, ids) -> dict:
        return sending.send_ids(self.host, ids, force=True)
