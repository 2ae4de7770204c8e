"""Bounces: recognising them, finding who bounced and which mail, and recording it.

The original mail is found from the signed bounce address (`bounce+<value>-<sig>`, made by
`core.tokens.bounce_address`) and/or from the Message-Id inside the returned headers. A
token whose signature does not verify is ignored, so nobody can forge a bounce that marks
another mail bounced; a returned Message-Id only counts for a recipient that mail really had.
"""
import email
import re

import flufl.bounce
import peewee as pw

from postroom.core import emails, tokens
from postroom.core.models import Message, Notification, Partner

from .parsing import header_text, is_daemon, message_ids

FAILURE_TYPE = "mail_bounce"


def is_bounce(mail, mail_from: str | None, verdicts) -> bool:
    """Sent to the bounce address, sent by MAILER-DAEMON/postmaster, or a delivery report."""
    if any(v.kind == "bounce" for v in verdicts):
        return True
    if is_daemon(mail_from) or is_daemon(mail.from_address):
        return True
    return mail.is_report


def _dsn_fields(msg) -> tuple[set, str]:
    """Failed Final-Recipients and the first Diagnostic-Code/Status of a RFC 3464 report."""
    failed, reason = set(), ""
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        blocks = payload if isinstance(payload, list) else [email.message_from_string(str(payload))]
        for block in blocks:
            action = (block.get("Action") or "failed").strip().lower()
            final = block.get("Final-Recipient") or block.get("Original-Recipient") or ""
            addr = str(final).split(";", 1)[-1].strip()
            if action == "failed" and emails.is_valid(addr):
                failed.add(addr.lower())
                diag = " ".join(str(block.get("Diagnostic-Code") or "").split(";", 1)[-1].split())
                status = str(block.get("Status") or "").strip()
                reason = reason or (f"{status} {diag}".strip() if diag or status else "")
    return failed, reason


def _returned_message_id(msg) -> str | None:
    """The Message-Id of the mail that bounced, from the returned message or headers."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else inner
            if isinstance(inner, email.message.Message):
                ids = message_ids(header_text(inner, "Message-Id"))
                if ids:
                    return ids[0]
        elif ctype in ("text/rfc822-headers", "text/rfc822-header"):
            inner = email.message_from_string(part.get_payload(decode=False) or "")
            ids = message_ids(header_text(inner, "Message-Id"))
            if ids:
                return ids[0]
    return None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_STATUS_LINE = re.compile(r"\b([45]\d\d[ -][245]\.\d{1,3}\.\d{1,3}\b.*)")
_QUOTED_MSGID = re.compile(r"^message-id:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


def _summary(mail) -> str:
    """A one-line diagnostic for non-DSN bounces: the first SMTP status line quoted in the
    text (e.g. `550 5.1.1 <bob@…>: User unknown`), else the bounce's subject."""
    match = _STATUS_LINE.search(mail.body or "")
    if match:
        return " ".join(match.group(1).split())[:500]
    return f"bounce: {mail.subject or 'delivery failure'}"[:500]


def _quoted_message_id(mail) -> str | None:
    """Plain-text bounces (Exim, qmail) quote the returned headers inside their body."""
    match = _QUOTED_MSGID.search(mail.body or "")
    return match.group(1) if match else None


def analyse(host, mail, verdicts) -> dict:
    """Everything a bounce tells, without writing: token value, bounced addresses, reason,
    the original Message-Id, and the notification(s) they designate."""
    value = forged = None
    for v in verdicts:
        if v.kind == "bounce" and "+" in v.local:
            found = tokens.bounce_value(host, v.address)
            if found is None:
                forged = v.address
            value = value or found
    try:
        detected = {a.decode("ascii", "replace").lower() for a in flufl.bounce.scan_message(mail.msg)}
    except Exception:  # noqa: BLE001 - a detector choking on odd input must not stop us
        detected = set()
    dsn_failed, reason = _dsn_fields(mail.msg)
    addresses = sorted(a for a in detected | dsn_failed if emails.is_valid(a))
    original_id = _returned_message_id(mail.msg) or _quoted_message_id(mail)
    return {"value": value, "forged": forged, "addresses": addresses,
            "reason": _CONTROL.sub(" ", reason or _summary(mail)).strip(), "message_id": original_id}


def targets(host, info) -> list[dict]:
    """One dict per bounced recipient: email, partner, notification (or None)."""
    out = []
    nid = tokens.notification_of(info["value"])
    if nid is not None:
        note = (Notification.select(Notification, Partner).join(Partner)
                .where(Notification.id == nid).first())
        if note is not None:
            msgid = Message.select(Message.message_id).where(Message.id == note.message_id).scalar()
            out.append({"email": note.partner.email_normalized, "partner": note.partner,
                        "notification": note, "message_id": msgid})
            return out
    message = None
    if info["message_id"]:
        message = Message.get_or_none(Message.message_id == info["message_id"])
    addresses = info["addresses"]
    partners = {}
    if addresses:
        for p in Partner.select().where(Partner.email_normalized.in_(addresses)).order_by(Partner.id):
            partners.setdefault(p.email_normalized, p)
    # Without a verified token only a returned Message-Id ties the bounce to our mail, and
    # only a recipient that mail really had may be counted: nothing else can be forged.
    verified = info["value"] is not None
    if not verified and not info["message_id"]:
        return out
    for addr in addresses:
        partner = partners.get(addr)
        note = None
        if message is not None and partner is not None:
            note = Notification.get_or_none((Notification.message == message)
                                            & (Notification.partner == partner))
        if not verified and note is None:
            partner = None
        out.append({"email": addr, "partner": partner, "notification": note,
                    "message_id": info["message_id"]})
    return out


def apply(host, info, found) -> list[dict]:
    """Record the bounce (inside the caller's transaction) and fire the hook per recipient."""
    now = host.clock.now()
    fired = []
    for t in found:
        note, partner = t["notification"], t["partner"]
        if note is not None:
            (Notification.update(status="bounce", failure_type=FAILURE_TYPE,
                                 failure_reason=info["reason"], updated_at=now)
             .where(Notification.id == note.id).execute())
        if partner is not None:
            (Partner.update(message_bounce=Partner.message_bounce + 1)
             .where(Partner.id == partner.id).execute())
        bounce = {"email": t["email"], "token": info["value"], "message_id": t["message_id"],
                  "reason": info["reason"], "partner_id": partner.id if partner else None,
                  "notification_id": note.id if note else None}
        try:
            with host.transaction():  # a savepoint: a listener's failure undoes only its own writes
                host.hook.postroom_bounce_received(host=host, bounce=bounce)
        except (pw.OperationalError, pw.InterfaceError):
            raise  # the database itself is gone: the gateway answers 451 and the bounce comes again
        except Exception:  # noqa: BLE001 - a bounce never fails because of a listener
            host.log.exception("a postroom_bounce_received listener failed for %s", t["email"])
        fired.append(bounce)
    return fired


def describe(info, found) -> str:
    extra = f" (forged or mangled token on {info['forged']} ignored)" if info["forged"] else ""
    if not found:
        return f"bounce: no bounced recipient recognised{extra}"
    parts = []
    for t in found:
        where = f"notification {t['notification'].id}" if t["notification"] else "no notification"
        parts.append(f"{t['email']} ({where})")
    return f"bounce for {', '.join(parts)}{extra}: {info['reason']}"


def reset_counter_of(address: str) -> None:
    """A normal mail from an address shows it works again: its partners' bounce counter to 0."""
    (Partner.update(message_bounce=0)
     .where((Partner.email_normalized == address) & (Partner.message_bounce > 0)).execute())

