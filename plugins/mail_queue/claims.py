"""Claiming due mails: a lease per batch under a claim token, so that any number of
workers share the queue and a dead worker's mails are taken over when its lease ends."""
import uuid

from postroom.core.db import is_postgres

from .models import OutgoingMail
from .settings import lease


def due_condition(now):
    """Outgoing mails whose time has come (scheduled and next attempt both past)."""
    return ((OutgoingMail.state == "outgoing")
            & (OutgoingMail.scheduled_at.is_null() | (OutgoingMail.scheduled_at <= now))
            & (OutgoingMail.next_attempt_at.is_null() | (OutgoingMail.next_attempt_at <= now)))


def free(now):
    """Mails nobody holds: never claimed, or their lease ran out."""
    return OutgoingMail.lease_until.is_null() | (OutgoingMail.lease_until < now)


def claim(host, owner: str, limit: int, where=None, due=True) -> tuple[str, int]:
    """Lease up to `limit` outgoing mails under a fresh claim token and commit; returns
    (token, how many). Later statements address the claimed rows by their token, so no
    statement carries a list of thousands of ids.

    On PostgreSQL the candidates are locked FOR UPDATE SKIP LOCKED so workers never wait
    on each other nor take the same row; SQLite's write lock serialises claims."""
    now = host.clock.now()
    token = f"{owner}:{uuid.uuid4().hex[:12]}"
    cond = free(now) & (due_condition(now) if due else (OutgoingMail.state == "outgoing"))
    if where is not None:
        cond &= where
    with host.transaction():
        candidates = OutgoingMail.select(OutgoingMail.id).where(cond).order_by(OutgoingMail.id).limit(limit)
        if is_postgres(host.db):
            candidates = candidates.for_update(skip_locked=True)
        taken = (OutgoingMail.update(lease_owner=token, lease_until=now + lease(host))
                 .where(OutgoingMail.id.in_(candidates) & free(now)).execute())
    return token, taken
