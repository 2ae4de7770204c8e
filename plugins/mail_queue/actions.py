"""What an operator does with queued mail: retry, cancel, and on a chatter message with
failed recipients, resend ("Send & close") or ignore them."""
from postroom.core import chatter, emails
from postroom.core.errors import Conflict, InvalidInput, NotFound
from postroom.core.models import Message, Notification, Partner
from postroom.core.records import parse_id

from . import addressing, compose, sending
from .models import OutgoingMail
from .queue import from_notifications
from .settings import chunks, lifetime


def parse_ids(ids) -> list[int]:
    """Mail ids as an operator typed them, sorted and distinct; InvalidInput otherwise."""
    return sorted({parse_id(i, "mail") for i in ids})


def get_mail(host, mail_id) -> OutgoingMail:
    mail = OutgoingMail.get_or_none(OutgoingMail.id == parse_ids([mail_id])[0])
    if mail is None:
        raise NotFound(f"no outgoing mail with id {mail_id} (sent mails are deleted unless kept)")
    return mail


def existing(ids, states) -> list[OutgoingMail]:
    """The mails `ids`, all of which must exist and be in one of `states`."""
    found = list(OutgoingMail.select().where(OutgoingMail.id.in_(ids)))
    missing = sorted(set(ids) - {m.id for m in found})
    if missing:
        raise NotFound(f"no outgoing mail with id {', '.join(map(str, missing))}")
    wrong = [m for m in found if m.state not in states]
    if wrong:
        raise InvalidInput("; ".join(f"mail {m.id} is {m.state}" for m in wrong)
                           + f" (only {' or '.join(states)} mails qualify)")
    return found


def _notifications(mails, values) -> None:
    nids = [m.notification_id for m in mails if m.notification_id]
    for chunk in chunks(nids):
        Notification.update(**values).where(Notification.id.in_(chunk)).execute()


_LIVE = ("outgoing", "sent")


def _live_twins(mails) -> list:
    """Of `mails`, those whose notification or ref already has another live mail (outgoing
    or sent): retrying them would mail that recipient twice."""
    M = OutgoingMail
    nids = {m.notification_id for m in mails if m.notification_id}
    refs = {m.ref for m in mails if m.ref}
    live_n, live_r = set(), set()
    for chunk in chunks(nids):
        live_n |= {n for (n,) in M.select(M.notification_id).where(
            M.notification_id.in_(chunk) & M.state.in_(_LIVE)).tuples()}
    for chunk in chunks(refs):
        live_r |= {r for (r,) in M.select(M.ref).where(M.ref.in_(chunk) & M.state.in_(_LIVE)).tuples()}
    return [m for m in mails if m.notification_id in live_n or m.ref in live_r]


def retry(host, ids=(), all_failed=False, refs=None) -> list[int]:
    """exception (or canceled) → outgoing, due at the next run, with a fresh lifetime: the
    same row, so the same Message-Id (receivers can de-duplicate). A failed mail whose
    recipient already has a live mail for the same notification or ref is canceled instead:
    there is never more than one live mail per notification or per ref. `refs` picks the
    failed mails by their enqueuer's ref (the service's `retry`)."""
    now = host.clock.now()
    with host.transaction():
        if all_failed:
            mails = list(OutgoingMail.select().where(OutgoingMail.state == "exception"))
        elif refs is not None:
            mails = []
            for chunk in chunks(sorted(set(refs))):
                mails += list(OutgoingMail.select().where(OutgoingMail.ref.in_(chunk)
                                                          & (OutgoingMail.state == "exception")))
        else:
            mails = existing(parse_ids(ids), ("exception", "cancel"))
        twins = _live_twins(mails)
        if twins:
            for chunk in chunks([m.id for m in twins]):
                OutgoingMail.update(state="cancel", updated_at=now).where(OutgoingMail.id.in_(chunk)).execute()
            for m in twins:
                host.log.info("mail %s msgid=%s canceled: its recipient already has a live mail for "
                              "the same %s", m.id, m.message_id,
                              f"notification {m.notification_id}" if m.notification_id else f"ref {m.ref}")
        twin_ids = {m.id for m in twins}
        mails = [m for m in mails if m.id not in twin_ids]
        ids = [m.id for m in mails]
        for chunk in chunks(ids):
            (OutgoingMail.update(state="outgoing", failure_type=None, failure_reason=None,
                                 next_attempt_at=None, scheduled_at=None, lease_owner=None,
                                 lease_until=None, updated_at=now, expires_at=now + lifetime(host))
             .where(OutgoingMail.id.in_(chunk)).execute())
        _notifications(mails, {"status": "ready", "failure_type": None, "failure_reason": None,
                               "updated_at": now})
    for m in mails:
        host.log.info("mail %s msgid=%s back to outgoing (retry asked)", m.id, m.message_id)
    return ids


def send_now(host, ids) -> list[int]:
    """Send these outgoing mails now, due or not; returns their ids."""
    mails = existing(parse_ids(ids), ("outgoing",))
    sending.send_ids(host, [m.id for m in mails], force=True)
    return [m.id for m in mails]


def export(host, mail_id) -> bytes:
    """The mail as an .eml: the bytes it is (or was) sent as."""
    mail = get_mail(host, mail_id)
    return compose.final_bytes(host, mail, addressing.envelope_from(host, mail),
                               compose.format_date(mail.sent_at or mail.updated_at or mail.created_at))


def cancel(host, ids) -> list[int]:
    """outgoing or exception → cancel; the recipients' notifications become canceled."""
    now = host.clock.now()
    with host.transaction():
        mails = existing(parse_ids(ids), ("outgoing", "exception"))
        busy = [m.id for m in mails if m.lease_until is not None and m.lease_until > now]
        if busy:
            raise Conflict(f"mail {', '.join(map(str, busy))} is being sent right now; "
                           f"nothing was canceled, try again in a moment")
        ids = [m.id for m in mails]
        OutgoingMail.update(state="cancel", updated_at=now).where(OutgoingMail.id.in_(ids)).execute()
        _notifications(mails, {"status": "canceled", "updated_at": now})
    host.log.info("mail queue: mails %s canceled", ids)
    return ids


def failed_notifications(message_ids):
    return (Notification.select(Notification, Partner).join(Partner)
            .where(Notification.message.in_(message_ids) & Notification.status.in_(chatter.FAILED)))


def ignore(host, message_ids) -> int:
    """"Ignore all": the messages' failed notifications become canceled (white envelope) and
    their failed mails are canceled."""
    now = host.clock.now()
    with host.transaction():
        notes = list(failed_notifications(message_ids))
        nids = [n.id for n in notes]
        for chunk in chunks(nids):
            Notification.update(status="canceled", updated_at=now).where(Notification.id.in_(chunk)).execute()
            (OutgoingMail.update(state="cancel", updated_at=now)
             .where(OutgoingMail.notification_id.in_(chunk) & (OutgoingMail.state == "exception")).execute())
    host.log.info("mail queue: %s failed notification(s) ignored on messages %s", len(nids), list(message_ids))
    return len(nids)


def messages_with_failures() -> list[int]:
    return [r.message_id for r in Notification.select(Notification.message).distinct()
            .where(Notification.status.in_(chatter.FAILED))]


def resend(host, message: Message, only=(), fixes=None) -> dict:
    """"Send & close": resend to the chosen failed recipients (all failed by default), with
    corrected addresses (`fixes` {old: new} updates the partner), and ignore the others."""
    fixes = {emails.normalize(old): new for old, new in (fixes or {}).items()}
    for new in fixes.values():
        emails.split_address(new)
    only = {emails.normalize(o) for o in only}
    notes = list(failed_notifications([message.id]))
    if not notes:
        raise InvalidInput(f"message {message.id} has no failed recipient to resend to")
    known = {n.partner.email_normalized for n in notes}
    unknown = (only | set(fixes)) - known
    if unknown:
        raise InvalidInput(f"not a failed recipient of message {message.id}: {', '.join(sorted(unknown))}")
    chosen = [n for n in notes if not only or n.partner.email_normalized in only]
    others = [n for n in notes if n not in chosen]
    now = host.clock.now()
    with host.transaction():
        for n in chosen:
            new = fixes.get(n.partner.email_normalized)
            if new:
                _, addr = emails.split_address(new)
                Partner.update(email=addr, email_normalized=addr.lower()).where(Partner.id == n.partner.id).execute()
        chosen_ids = [n.id for n in chosen]
        M = OutgoingMail
        # The failed mail itself goes again (same row, same Message-Id), to the partner's
        # address as it is now; a notification without one gets a new mail.
        reused = {}
        for m in M.select(M.id, M.notification_id).where(
                M.notification_id.in_(chosen_ids) & M.state.in_(("exception", "cancel"))).order_by(M.id):
            reused.setdefault(m.notification_id, m.id)
        for n in chosen:
            if n.id in reused:
                address = Partner.get_by_id(n.partner.id).email
                (M.update(state="outgoing", email_to=address, failure_type=None, failure_reason=None,
                          next_attempt_at=None, scheduled_at=None, lease_owner=None, lease_until=None,
                          sending_since=None, bulk=False, updated_at=now, expires_at=now + lifetime(host))
                 .where(M.id == reused[n.id]).execute())
        Notification.update(status="ready", failure_type=None, failure_reason=None, updated_at=now
                            ).where(Notification.id.in_(chosen_ids)).execute()
        if others:
            other_ids = [n.id for n in others]
            Notification.update(status="canceled", updated_at=now).where(Notification.id.in_(other_ids)).execute()
            # Their failed mails are canceled with them: no later "retry all" mails them.
            (M.update(state="cancel", updated_at=now)
             .where(M.notification_id.in_(other_ids) & M.state.in_(("exception", "outgoing"))
                    & (M.lease_until.is_null() | (M.lease_until < now))).execute())
        fresh = [i for i in chosen_ids if i not in reused]
        if fresh:
            from_notifications(host, message, Notification.id.in_(fresh), bulk=False)
        mid = message.id
        host.after_commit(lambda: sending.send_message_mails(host, mid), network=True)
    host.log.info("mail queue: message %s resent to %s, %s ignored", message.id,
                  [n.partner.email_normalized for n in chosen], len(others))
    return {"resent": [fixes.get(n.partner.email_normalized) or n.partner.email for n in chosen],
            "ignored": [n.partner.email for n in others]}
