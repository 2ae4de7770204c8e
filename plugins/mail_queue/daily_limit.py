"""The exact daily limit of a server: slots reserved before a conversation, released when
a mail did not leave, and the operator's view of today's count."""
import datetime as dt

from postroom.core.db import is_postgres

from .models import DailyCount
from .servers import DEFAULT_NAME, Server, added_servers, default_server


def day_of(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%d")


def reset_at(now: dt.datetime) -> dt.datetime:
    return dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=now.tzinfo)


def reserve(host, server: Server, wanted: int) -> tuple[int, str]:
    """Take up to `wanted` slots of today's count for `server`; returns how many were
    granted and the day they count against (give unused ones back to that same day, even
    after midnight).

    Runs in its own short transaction, before any SMTP conversation: a compare-and-set
    UPDATE (`WHERE count = <seen>`, checked through the row count) so that concurrent
    workers can never grant more than the limit between them."""
    day = day_of(host.clock.now())
    if server.daily_limit is None or wanted <= 0:
        return max(0, wanted), day
    for _ in range(50):
        with host.transaction():
            DailyCount.insert(server=server.name, day=day, count=0).on_conflict_ignore().execute()
            query = DailyCount.select(DailyCount.count).where(
                (DailyCount.server == server.name) & (DailyCount.day == day))
            if is_postgres(host.db):
                query = query.for_update()
            seen = query.scalar()
            granted = max(0, min(wanted, server.daily_limit - seen))
            if granted == 0:
                return 0, day
            done = (DailyCount.update(count=DailyCount.count + granted)
                    .where((DailyCount.server == server.name) & (DailyCount.day == day)
                           & (DailyCount.count == seen)).execute())
        if done == 1:
            return granted, day
    return 0, day


def release(host, server: Server, unused: int, day: str) -> None:
    """Give back slots taken by `reserve` on `day` that were not used (the mail did not
    leave). Always against the day they were reserved on: slots taken before midnight
    and returned after it must not free the new day's count."""
    if server.daily_limit is None or unused <= 0:
        return
    with host.transaction():
        (DailyCount.update(count=DailyCount.count - unused)
         .where((DailyCount.server == server.name) & (DailyCount.day == day)
                & (DailyCount.count >= unused)).execute())


def today_count(host, server_name: str = DEFAULT_NAME) -> int:
    row = DailyCount.get_or_none((DailyCount.server == server_name)
                                 & (DailyCount.day == day_of(host.clock.now())))
    return row.count if row else 0


def limit_status(host, server: Server | None = None) -> dict:
    """Today's count on a server (the default one unless given), its limit and when the
    count resets."""
    now = host.clock.now()
    server = server or default_server(host)
    count = today_count(host, server.name)
    return {"server": server.name, "day": day_of(now), "count": count, "limit": server.daily_limit,
            "remaining": max(0, server.daily_limit - count), "resets_at": reset_at(now)}


def limit_statuses(host) -> list[dict]:
    """The default server's status, then each added server that has its own limit."""
    return [limit_status(host)] + [limit_status(host, s) for s in added_servers(host)
                                   if s.daily_limit is not None]


def limit_reason(host, server: Server) -> str:
    now = host.clock.now()
    return (f"Daily limit reached: {today_count(host, server.name)} emails sent today through "
            f"server '{server.name}' (limit {server.daily_limit}); the count resets at "
            f"{reset_at(now):%Y-%m-%d %H:%M} UTC. Retry the mail then, raise daily_limit, or add "
            f"an outgoing server of your own (postroom server add).")


def requeue_after_reset(host, limit: int = 5000) -> int:
    """Mails that failed with `mail_limit` on an earlier day go back to `outgoing` (with a
    fresh lifetime; their notifications back to ready): the count has reset, so they are
    sent without an operator's retry. Returns how many."""
    from postroom.core.models import Notification

    from .models import OutgoingMail as M
    from .settings import chunks, lifetime
    now = host.clock.now()
    today = dt.datetime.combine(now.date(), dt.time(), tzinfo=now.tzinfo)
    cond = (M.state == "exception") & (M.failure_type == "mail_limit") & (M.updated_at < today)
    rows = list(M.select(M.id, M.message_id, M.notification_id).where(cond).order_by(M.id).limit(limit).tuples())
    if not rows:
        return 0
    with host.transaction():
        for chunk in chunks(rows):
            ids = [i for i, _, _ in chunk]
            (M.update(state="outgoing", failure_type=None, failure_reason=None, next_attempt_at=None,
                      lease_owner=None, lease_until=None, sending_since=None, updated_at=now,
                      expires_at=now + lifetime(host))
             .where(M.id.in_(ids) & cond).execute())
            nids = [n for _, _, n in chunk if n]
            if nids:
                (Notification.update(status="ready", failure_type=None, failure_reason=None, updated_at=now)
                 .where(Notification.id.in_(nids)).execute())
    for mail_id, message_id, _ in rows:
        host.log.info("mail %s msgid=%s: back to outgoing, the daily limit has reset", mail_id, message_id)
    return len(rows)
