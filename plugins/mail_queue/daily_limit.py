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


def reserve(host, server: Server, wanted: int) -> int:
    """Take up to `wanted` slots of today's count for `server`; returns how many were granted.

    Runs in its own short transaction, before any SMTP conversation: a compare-and-set
    UPDATE (`WHERE count = <seen>`, checked through the row count) so that concurrent
    workers can never grant more than the limit between them."""
    if server.daily_limit is None or wanted <= 0:
        return wanted
    day = day_of(host.clock.now())
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
                return 0
            done = (DailyCount.update(count=DailyCount.count + granted)
                    .where((DailyCount.server == server.name) & (DailyCount.day == day)
                           & (DailyCount.count == seen)).execute())
        if done == 1:
            return granted
    return 0


def release(host, server: Server, unused: int) -> None:
    """Give back slots taken by `reserve` that were not used (the mail did not leave)."""
    if server.daily_limit is None or unused <= 0:
        return
    day = day_of(host.clock.now())
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
