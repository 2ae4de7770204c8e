"""Bounces: recognising them, finding who bounced and which mail, and recording it.

Only evidence tied to a mail we sent counts, since anyone can send us a report naming
anyone:
- a genuine signed bounce address (`bounce+<value>-<sig>`, made by
  `core.tokens.bounce_address`) names one mail and so one recipient: the bounce is that
  recipient's, and other addresses the report names are ignored (and said so);
- without one, a returned Message-Id counts only when Postroom generated it (never one
  that arrived from outside, see `core.chatter.generated_here`) and only for an address
  that very mail was sent to;
- a mail counts at most once: a notification already bounced is not bounced again, so a
  replayed report changes nothing.

"Delayed" and "delivered/relayed/expanded" reports are information: the notification
shows them, nothing counts. A permanent failure that is about us, not the address (5.7.x,
blocked, spam, DMARC: the receiver refusing the *sender*), fails the mail with its reason
(`mail_policy`) but never raises the recipient's bounce counter.
"""
import email
import re

import flufl.bounce
import peewee as pw

from postroom.core import chatter, emails, tokens
from postroom.core.models import Message, Notification, Partner

from .parsing import header_text, is_daemon, message_ids

FAILURE_TYPE = "mail_bounce"
POLICY_FAILURE_TYPE = "mail_policy"
INFORMATION = ("delayed", "delivered", "relayed", "expanded")
_POLICY_WORDS = re.compile(r"\b(blocked|block ?list|black ?list|spam|dmarc|reputation|policy|"
                           r"spf|dkim|denied|not authori[sz]ed|rbl|listed)\b", re.IGNORECASE)
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def is_bounce(mail, mail_from: str | None, verdicts) -> bool:
    """Sent to the bounce address, sent by MAILER-DAEMON/postmaster, or a delivery report."""
    if any(v.kind == "bounce" for v in verdicts):
        return True
    if is_daemon(mail_from) or is_daemon(mail.from_address):
        return True
    return mail.is_report


def kind_of(action: str, status: str, diagnostic: str) -> str:
    """`information` (delayed, delivered…), `policy` (the receiver refuses the sender) or
    `failed` (the address does not work) for one reported recipient."""
    action = (action or "failed").strip().lower()
    match = _STATUS.search(status or "") or _STATUS.search(diagnostic or "")
    if action in INFORMATION or (match and match.group(1) == "2"):
        return "information"
    if match and match.group(2) == "7":
        return "policy"
    if _POLICY_WORDS.search(diagnostic or ""):
        return "policy"
    return "failed"


def _dsn_blocks(msg) -> list[dict]:
    """Every per-recipient block of a RFC 3464 report: address, kind, reason."""
    out = []
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        blocks = payload if isinstance(payload, list) else [email.message_from_string(str(payload))]
        for block in blocks:
            final = block.get("Final-Recipient") or block.get("Original-Recipient") or ""
            addr = str(final).split(";", 1)[-1].strip().lower()
            if not emails.is_valid(addr):
                continue
            diag = " ".join(str(block.get("Diagnostic-Code") or "").split(";", 1)[-1].split())
            status = str(block.get("Status") or "").strip()
            action = str(block.get("Action") or "failed")
            out.append({"email": addr, "kind": kind_of(action, status, diag),
                        "reason": f"{status} {diag}".strip(), "action": action.strip().lower()})
    return out


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


def _clean(text: str) -> str:
    return _CONTROL.sub(" ", text or "").strip()[:2000]


def analyse(host, mail, verdicts) -> dict:
    """Everything a bounce tells, without writing: the token value, one entry per reported
    recipient (email, kind, reason) and the returned Message-Id."""
    value = forged = None
    for v in verdicts:
        if v.kind == "bounce" and "+" in v.local:
            found = tokens.bounce_value(host, v.address)
            if found is None:
                forged = v.address
            value = value or found
    reported = {b["email"]: b for b in _dsn_blocks(mail.msg)}
    if not reported:  # not a DSN: what the detectors find in Postfix/Exim/qmail/Exchange text
        try:
            detected = {a.decode("ascii", "replace").lower() for a in flufl.bounce.scan_message(mail.msg)}
        except Exception:  # noqa: BLE001 - a detector choking on odd input must not stop us
            detected = set()
        summary = _summary(mail)
        kind = kind_of("failed", summary, summary)
        reported = {a: {"email": a, "kind": kind, "reason": summary, "action": "failed"}
                    for a in sorted(detected) if emails.is_valid(a)}
    for r in reported.values():
        r["reason"] = _clean(r["reason"] or _summary(mail))
    original_id = _returned_message_id(mail.msg) or _quoted_message_id(mail)
    return {"value": value, "forged": forged, "reported": list(reported.values()),
            "message_id": original_id}


def targets(host, info) -> dict:
    """Who the bounce is attributed to: {"notes": [(notification, partner, entry)],
    "foreign": entry list handed to other plugins, "ignored": addresses not attributed}.

    Reads only. A notification token names one notification; another genuine token (a
    plugin's own mail) is the plugin's to attribute; a returned Message-Id counts only when
    we generated it, for its own recipients."""
    reported = info["reported"]
    by_email = {r["email"]: r for r in reported}
    nid = tokens.notification_of(info["value"])
    if nid is not None:
        note = (Notification.select(Notification, Partner).join(Partner)
                .where(Notification.id == nid).first())
        if note is None:
            return {"notes": [], "foreign": [], "ignored": sorted(by_email)}
        own = note.partner.email_normalized
        entry = by_email.get(own) or _only_entry(reported, own)
        return {"notes": [(note, note.partner, entry)], "foreign": [],
                "ignored": sorted(a for a in by_email if a != own)}
    if info["value"] is not None:  # a plugin's token: it knows its own recipient
        return {"notes": [], "foreign": reported, "ignored": []}
    if not info["message_id"] or not by_email:
        return {"notes": [], "foreign": [], "ignored": sorted(by_email)}
    notes = list(Notification.select(Notification, Partner).join(Partner)
                 .switch(Notification).join(Message)
                 .where((Message.message_id == info["message_id"]) & chatter.generated_here()
                        & Partner.email_normalized.in_(list(by_email))))
    mine = [(n, n.partner, by_email[n.partner.email_normalized]) for n in notes]
    attributed = {n.partner.email_normalized for n in notes}
    # Not a chatter message of ours: perhaps another plugin's mail (a campaign's).
    foreign = [] if notes else reported
    return {"notes": mine, "foreign": foreign, "ignored": sorted(a for a in by_email if a not in attributed)
            if notes else []}


def _only_entry(reported, own) -> dict:
    """The report's entry for a token's recipient that the report itself names differently
    (a forward, a rewritten address): its one entry, else an unspecified failure."""
    if len(reported) == 1:
        return {**reported[0], "email": own}
    kinds = {r["kind"] for r in reported}
    kind = "failed" if not kinds or "failed" in kinds else sorted(kinds)[0]
    reason = next((r["reason"] for r in reported if r["kind"] == kind), "bounce")
    return {"email": own, "kind": kind, "reason": reason, "action": "failed"}


def apply(host, info, found) -> list[dict]:
    """Record the bounce (inside the caller's transaction) and fire the hook for what was
    newly recorded. Returns the hook payloads."""
    now = host.clock.now()
    fired = []
    for note, partner, entry in found["notes"]:
        kind, reason = entry["kind"], entry["reason"]
        if kind == "information":
            (Notification.update(failure_reason=f"{entry['action']}: {reason}"[:2000], updated_at=now)
             .where((Notification.id == note.id) & Notification.status.not_in(chatter.FAILED)).execute())
            continue
        status, ftype = ("bounce", FAILURE_TYPE) if kind == "failed" else ("exception", POLICY_FAILURE_TYPE)
        changed = (Notification.update(status=status, failure_type=ftype, failure_reason=reason, updated_at=now)
                   .where((Notification.id == note.id) & (Notification.status != "bounce")
                          & ~((Notification.status == status) & (Notification.failure_type == ftype)))
                   .execute())
        if not changed:
            continue  # this mail's bounce was counted already: a replay changes nothing
        if kind == "failed":
            (Partner.update(message_bounce=Partner.message_bounce + 1)
             .where(Partner.id == partner.id).execute())
        fired.append(_fire(host, {"email": partner.email_normalized, "token": info["value"],
                                  "message_id": info["message_id"], "reason": reason,
                                  "partner_id": partner.id, "notification_id": note.id,
                                  "counts": kind == "failed", "addresses": [partner.email_normalized]}))
    counted = [r for r in found["foreign"] if r["kind"] != "information"]
    if counted:
        first = next((r for r in counted if r["kind"] == "failed"), counted[0])
        fired.append(_fire(host, {"email": first["email"] if len(counted) == 1 else None,
                                  "token": info["value"], "message_id": info["message_id"],
                                  "reason": first["reason"], "partner_id": None, "notification_id": None,
                                  "counts": first["kind"] == "failed",
                                  "addresses": [r["email"] for r in counted]}))
    if found["ignored"]:
        host.log.info("bounce: report names %s, not tied to a mail we sent them: ignored",
                      ", ".join(found["ignored"]))
    return fired


def _fire(host, bounce) -> dict:
    try:
        with host.transaction():  # a savepoint: a listener's failure undoes only its own writes
            host.hook.postroom_bounce_received(host=host, bounce=bounce)
    except (pw.OperationalError, pw.InterfaceError):
        raise  # the database itself is gone: the gateway answers 451 and the bounce comes again
    except Exception:  # noqa: BLE001 - a bounce never fails because of a listener
        host.log.exception("a postroom_bounce_received listener failed for %s", bounce["email"])
    return bounce


def describe(info, found) -> str:
    extra = f" (forged or mangled token on {info['forged']} ignored)" if info["forged"] else ""
    if found["ignored"]:
        extra += f" (not tied to a mail we sent them, ignored: {', '.join(found['ignored'][:5])})"
    parts = [f"{partner.email_normalized} (notification {note.id}: {entry['kind']})"
             for note, partner, entry in found["notes"]]
    parts += [f"{r['email']} ({r['kind']}, for the plugin that sent it)" for r in found["foreign"]]
    if not parts:
        return f"bounce: no bounced recipient recognised{extra}"
    reasons = {e["reason"] for _, _, e in found["notes"]} | {r["reason"] for r in found["foreign"]}
    return f"bounce for {', '.join(parts)}{extra}: {'; '.join(sorted(reasons))[:500]}"


def reset_counter_of(address: str) -> None:
    """A normal mail from an address shows it works again: its partners' bounce counter to 0."""
    # Written directly: it runs for nearly every message received (and changes no row
    # unless the address had bounced).
    db = Partner._meta.database
    db.execute_sql(f'UPDATE "partner" SET "message_bounce" = 0 '
                   f'WHERE "email_normalized" = {db.param} AND "message_bounce" > 0', (address,))
