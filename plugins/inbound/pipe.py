"""Pipe delivery (`postroom inbound deliver`): one message on stdin from an MTA's pipe
transport, answered with a sysexits code the MTA understands."""
import email
import email.utils

from . import recipients, routing
from .settings import TOO_BIG, settings
from .parsing import header_text

EX_OK, EX_DATAERR, EX_NOUSER, EX_TEMPFAIL = 0, 65, 67, 75


def guess_recipients(host, data: bytes) -> list:
    """Without --recipient: Delivered-To / X-Original-To, else To and Cc on our domains."""
    msg = email.message_from_bytes(data)
    for name in ("Delivered-To", "X-Original-To"):
        found = [a for _, a in email.utils.getaddresses([header_text(msg, name)]) if a]
        if found:
            return found[:1]
    ours = set(host.config.domains)
    found = [a for _, a in email.utils.getaddresses([header_text(msg, "To"), header_text(msg, "Cc")])
             if a and recipients.split(a)[1] in ours]
    return list(dict.fromkeys(found))


def exit_code(line: str, at_rcpt: bool) -> int:
    """sysexits for a reply line: 2xx 0; 4xx 75; 5xx on the address 67; other 5xx 65."""
    if line.startswith("2"):
        return EX_OK
    if line.startswith("4"):
        return EX_TEMPFAIL
    return EX_NOUSER if at_rcpt else EX_DATAERR


def deliver(host, data: bytes, rcpts, sender: str = "") -> tuple[int, str]:
    """(exit code, reply line) for one piped message. Database errors propagate (→ 75)."""
    rcpts = list(rcpts) or guess_recipients(host, data)
    if not rcpts:
        return EX_NOUSER, "550 5.1.1 no recipient given (--recipient) and none of ours in the headers"
    if not data.strip():
        return EX_DATAERR, "554 5.6.0 empty message"
    if len(data) > settings(host).max_size:
        return EX_DATAERR, TOO_BIG
    at_rcpt = not all(recipients.check(host, r).accepted for r in rcpts)
    # Pipe transports hand over LF line endings; store what SMTP would have stored.
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    line = routing.smtp_reply(routing.deliver(host, peer="pipe", mail_from=sender, rcpts=rcpts, data=data))
    return exit_code(line, at_rcpt), line

