"""Contracts of the services plugins offer each other through `host.provide` / `host.service`.

A plugin that needs outgoing mail (mail_marketing, a third party's helpdesk) codes against
`MailService` below and gets it with `mail(host)`; it never imports the providing plugin
(today mail_queue). The contract is as binding as a hook's docstring: keep it stable.
"""
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

MAIL = "mail"


@runtime_checkable
class MailService(Protocol):
    """Outgoing mail, published under the name "mail" (by mail_queue).

    Outcomes are announced after commit through the provider's hooks `postroom_mail_sent`
    and `postroom_mail_failed` (mail_queue's hookspecs give the dict shapes); implement
    them with `@hookimpl(optionalhook=True)`.
    """

    #: Failure types that mean the deployment itself cannot send (its server, its daily
    #: limit, its sender address), not that one recipient's address is wrong, each with
    #: the one-line remedy `postroom doctor` shows; `{mid}` in it is replaced by the id of
    #: the latest chatter message that failed that way.
    deployment_failures: Mapping[str, str]

    def enqueue(self, mails: Iterable[dict]) -> list[int]:
        """Queue mails set-based, inside the caller's transaction when one is open (so they
        commit or roll back with the caller's rows); returns the new mail ids, in order.

        Each mail is a dict:
          - `email_to` (required): `addr` or `Name <addr>`, one recipient. A missing or
            invalid address is not refused here: the mail fails at send time with
            `mail_email_missing` / `mail_email_invalid`, so the enqueuer hears of it
            through `postroom_mail_failed`.
          - `recipient_name`: the recipient's name when `email_to` is a bare address (what
            a bulk enqueuer passes to spare parsing `Name <addr>` per mail).
          - `subject`, `body_html` (the plain-text part is derived from the HTML).
          - `body_text`: the plain-text part, when the enqueuer has it already (default:
            derived from `body_html`).
          - `email_from`: default config `mail_from`, else the admin partner's real
            address, else `notifications@<primary domain>`.
          - `headers`: {name: value} of extra headers (List-Unsubscribe, Precedence, ...);
            headers Postroom writes itself (From, To, Subject, Message-Id, ...) are refused.
          - `ref`: a letters-and-digits key of yours (`mt123`) or None. It comes back in
            `postroom_mail_sent/failed`, and is the value of the signed bounce address
            (`core.tokens.bounce_address(host, ref)`); without it the value is
            `core.tokens.notification_token(notification_id)`, or `m<mail id>`.
          - `scheduled_at`: aware datetime or None; the queue is triggered for it.
          - `message_id`: RFC 5322 `<left@right>`; generated when missing.
          - `notification_id`: the chatter notification this mail delivers, or None (its
            status then follows the mail: sent / exception / canceled).
          - `reply_to`: default the catchall address.
          - `attachment_ids`: ids of `core.attachments` rows the enqueuer holds (e.g. a
            campaign's); every such mail carries them, the MIME body built once per
            distinct body and attachments. Unknown ids raise InvalidInput.
          - `auto_delete` (default True): delete the mail once sent.
          - `bulk` (default True): wait for the queue's scheduled run; False sends right
            after the (caller's) transaction commits, in the background inside
            `host.offloading()`.
        CR/LF in any header-bound value (header injection) raises InvalidInput and nothing
        is inserted.
        """

    def trigger_queue(self, at: dt.datetime | None = None) -> None:
        """Ask the queue's scheduled action to run at `at` (aware; default now)."""

    def process_queue(self, limit: int | None = None) -> dict:
        """Run the queue once, now, in this process (network work: call it outside any
        transaction). Returns counts `processed`, `sent`, `failed`, `retry`, `remaining`."""

    def send_now(self, ids: Iterable[int]) -> dict:
        """Send these queued mails now, due or not (outside any transaction); returns the
        same counts as `process_queue`."""

    def retry(self, refs: Iterable[str]) -> set[str]:
        """Send the failed mails carrying these refs again: each the same mail (same
        Message-Id, so receivers can de-duplicate), at the queue's next run, inside the
        caller's transaction when one is open. Returns the refs that now have a live mail
        (outgoing or sent); enqueue a new mail only for the others (their mail is gone),
        so that a recipient never has two live mails for one ref."""


def mail(host) -> MailService:
    """The host's mail service, or NotFound telling the operator to enable a mail plugin."""
    return host.service(MAIL)
