"""Who a mail is from, where replies and bounces go, and whether its addresses can be used."""
import functools

from postroom.core import emails, records, tokens

from . import compose


def default_from(host) -> str:
    """config `mail_from`, else the admin partner's real address, else notifications@domain."""
    configured = host.config.get("mail_from")
    if configured:
        return configured
    admin = records.admin_partner(host)
    if admin is not None and admin.email and not records.admin_has_temporary_email(host):
        return emails.display_address(admin.name, admin.email)
    return f"notifications@{host.config.primary_domain}"


def catchall(host) -> str:
    return f"{host.config.get('catchall')}@{host.config.primary_domain}"


def reply_to_for(host, record) -> str:
    """The record's alias (a plugin may answer `postroom_reply_to`), else the catchall."""
    if record is not None:
        alias = host.hook.postroom_reply_to(host=host, record=record)
        if alias:
            return alias
    return catchall(host)


@functools.lru_cache(maxsize=1024)
def sender_problem(email_from: str | None):
    """(failure_type, reason) when `email_from` cannot be used as a sender, else None."""
    if not email_from or not compose.parse_address(email_from)[1]:
        return "mail_from_missing", "The mail has no sender address (From)."
    addr = compose.parse_address(email_from)[1]
    if not emails.is_valid(addr):
        return "mail_from_invalid", f"The sender address {addr!r} is not a valid email address."
    if addr.lower().endswith(".invalid"):
        return "mail_from_invalid", (f"The sender address {addr} is a temporary address; set a real "
                                     f"one (postroom admin set-email ADDRESS, or mail_from in the config).")
    return None


def recipient_problem(email_to: str | None):
    """(failure_type, reason) when `email_to` cannot be used as a recipient, else None."""
    if not email_to:
        return "mail_email_missing", "The recipient has no email address."
    # A bare address: the core's own pattern, without the cost of parsing a header.
    if not emails.is_valid_bare(email_to):
        return "mail_email_invalid", f"The recipient address {email_to!r} is not a valid email address."
    return None


def smtputf8_refusal(email_to: str, server_name: str) -> str:
    return (f"The recipient address {email_to!r} has a non-ASCII local part, which only a server "
            f"offering SMTPUTF8 (RFC 6531) accepts; the server '{server_name}' does not offer it.")


def bounce_value(mail) -> str:
    """The value signed into the mail's bounce address: the enqueuer's ref, else the
    notification's token, else `m<mail id>`."""
    if mail.ref:
        return mail.ref
    if mail.notification_id:
        return tokens.notification_token(mail.notification_id)
    return f"m{mail.id}"


def envelope_from(host, mail) -> str:
    """The signed bounce address (envelope sender, Return-Path) of `mail`."""
    return tokens.bounce_address(host, bounce_value(mail))
