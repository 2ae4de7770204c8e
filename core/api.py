"""The Python API for applications that embed Postroom (re-exported by `postroom`).

Each function is a thin, documented door onto the internals the CLI uses too (records,
chatter, the "mail" service): no second implementation. Every call is atomic: it runs in
one transaction of its own, or joins the caller's `with host.transaction():` block (then
nothing is written unless the whole block commits). Mail that leaves at once (urgent) is
sent after the outermost commit, never inside it.
"""
import datetime as dt
from collections.abc import Iterable, Mapping

from . import chatter, emails, records, services, tracking
from .clock import aware
from .config import Config
from .errors import InvalidInput
from .host import Host
from .html import text_to_html
from .models import Message, Partner, Record


def open_host(config, *, clock=None) -> Host:
    """Open the deployment described by `config` and return its `Host`.

    `config` is the path of a `postroom.cfg` (str or path-like), or a mapping of the same
    keys (`{"database": "sqlite:////srv/app/postroom.db", "domains": "example.com"}`);
    relative paths in a mapping are taken from the current directory. `clock` replaces
    the system clock (tests). The host is also a context manager that closes it:

        with open_host("/etc/postroom.cfg") as host:
            ...

    Open one host per process and keep it for the process's life (models are bound to
    the open host's database). Raises ConfigError or DatabaseUnavailable.
    """
    if isinstance(config, Mapping):
        loaded = Config({str(k): v for k, v in config.items()})
    else:
        loaded = Config.load(str(config))
    return Host(loaded, clock=clock).open()


# --- partners ------------------------------------------------------------------------

def create_partner(host, name: str, email: str, inbox: bool = False) -> Partner:
    """Create a contact. `inbox=True` notifies it inside the system (no email leaves).

    Returns the partner (`.id`, `.name`, `.email`). Raises InvalidInput for an empty
    name or an invalid address, Conflict when a partner already has this address."""
    return records.create_partner(host, name, email, inbox=inbox)


def find_partner(host, email: str) -> Partner | None:
    """The partner whose address is `email` (matched normalised, case-insensitively), or
    None."""
    return records.find_partner(host, email, required=False)


def _partner(host, partner_or_email) -> Partner:
    if isinstance(partner_or_email, Partner):
        return partner_or_email
    return records.find_partner(host, partner_or_email)  # NotFound names the address


# --- records -------------------------------------------------------------------------

def create_record(host, model: str, name: str, values: dict | None = None) -> Record:
    """Create a record of a registered type (`generic`, or a plugin's, e.g.
    `helpdesk.ticket`) with a chatter; `values` are its extra values (JSON-able).

    Returns the record (`.id`, `.model`, `.name`, `.values`). Raises NotFound for an
    unknown type, InvalidInput for an empty name."""
    return records.create_record(host, model, name, values)


def get_record(host, model: str, id) -> Record:
    """The record (`model`, `id`), or NotFound."""
    return records.get_record(host, model, id)


def follow(host, record: Record, partner_or_email) -> bool:
    """Make a partner follow `record` (`partner_or_email`: a `Partner` or its address): it
    is then notified of comments posted there. Returns False when it already followed. NotFound when no
    partner has the address (create it first with `create_partner`)."""
    return records.follow(host, record, _partner(host, partner_or_email))


def unfollow(host, record: Record, partner_or_email) -> bool:
    """Stop a partner following `record` (`partner_or_email`: a `Partner` or its address).
    Returns False when it did not follow."""
    return records.unfollow(host, record, _partner(host, partner_or_email))


# --- messages and mail ---------------------------------------------------------------

def resolve_author(host, author) -> tuple[Partner | None, str | None]:
    """(author partner, raw sender address) for `author`: a `Partner`, the address of one,
    or any other address (kept as the message's sender), or None."""
    if author is None or isinstance(author, Partner):
        return author, None
    partner = records.find_partner(host, author, required=False)
    return (partner, None) if partner is not None else (None, author)


def post_message(host, record: Record, body: str, subject: str | None = None, author=None,
                 partners: Iterable = (), note: bool = False, attachments: Iterable = ()) -> Message:
    """Post `body` (plain text) on `record`'s chatter and notify, in one transaction.

    `attachments`: file paths, or `(name, bytes, mimetype)` tuples (mimetype None: guessed
    from the name); every mail of the post carries them, stored once per content. A
    missing or unreadable file, a directory, or content over `attachment_max_size`
    raises InvalidInput and nothing is posted.

    A comment notifies the record's followers plus `partners` (Partners or addresses);
    `note=True` makes an internal note that notifies only `partners`. Never the author
    (`author`: a Partner, a partner's address, or a raw address). Partners preferring
    email get mail, sent right after the commit. Returns the message (`.id`,
    `.message_id`, `.subject`)."""
    author_partner, email_from = resolve_author(host, author)
    ids = [_partner(host, p).id for p in partners]
    return chatter.post_message(host, record, body, subject=subject, author=author_partner,
                                email_from=email_from, partner_ids=ids, note=note,
                                attachments=list(attachments))


def update_record(host, record: Record, values: Mapping, author=None) -> Message | None:
    """Write `values` (a mapping of names to text, numbers or booleans) into `record`, in
    one transaction. When its record type tracks some of them (`RecordType.tracked`) and
    they changed, one chatter entry lists each old → new value and notifies the followers
    subscribed to the `tracking` subtype; that message is returned, else None. `author`:
    a Partner, a partner's address, or a raw address. Raises InvalidInput for a bad name
    or value."""
    author_partner, _ = resolve_author(host, author)
    return tracking.update_record(host, record, dict(values), author=author_partner)


def send_mail(host, to, subject: str, body: str, *, sender: str | None = None, bulk: bool = False,
              at: dt.datetime | None = None) -> list[int]:
    """Send a mail that belongs to no record, through the "mail" service: one mail per
    recipient (`to` is an address or a list of them), `body` plain text.

    By default the mail is urgent: it leaves right after the commit (in the background
    inside `host.offloading()`). `bulk=True` leaves it for the queue's next run; `at` (a
    datetime, naive means UTC) schedules it. `sender` defaults to config `mail_from`.
    Returns the outgoing mail ids. Raises InvalidInput for a bad address or subject, and
    NotFound when no mail plugin is enabled."""
    recipients = [to] if isinstance(to, str) else list(to)
    if not recipients:
        raise InvalidInput("send_mail needs at least one recipient")
    for address in recipients + ([sender] if sender else []):
        emails.split_address(address)
    when = aware(at) if at is not None else None
    mail = services.mail(host)
    with host.transaction():
        return mail.enqueue([{"email_to": a, "subject": subject, "body_html": text_to_html(body),
                              "email_from": sender, "bulk": bulk or when is not None,
                              "scheduled_at": when} for a in recipients])
