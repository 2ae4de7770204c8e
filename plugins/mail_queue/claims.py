"""Claiming due mails: a lease per batch under a claim token, so that any number of
workers share the queue and a dead worker's mails are taken over when its lease ends.

With `mail_domain_concurrency` (`gmail.com=2, *=10`, like Postfix's
`smtp_destination_concurrency_limit` and its per-destination overrides) a claim also keeps
each recipient domain under its limit of mails in flight. In flight means leased: claimed
by a worker whose lease still runs and not yet answered (a sent mail stops counting at
its answer, once in the outcome journal). The count comes from the leased rows themselves
(and the journal), so it holds across every
worker and process of the deployment; claims that count are serialised (PostgreSQL: an
advisory lock for the claim's transaction; SQLite: its write lock), since two claims
counting at once would each see room for the same slots. What the limit holds back stays
queued, untouched; `queue list` says why (`held_back_reasons`)."""
import datetime as dt
import uuid

import peewee as pw

from postroom.core import scheduler
from postroom.core.db import is_postgres
from postroom.core.errors import ConfigError

from . import journal
from .models import OutgoingMail
from .pacing import domain_of
from .settings import ACTION_CODE, domain_concurrency, lease

M = OutgoingMail
# pg_advisory_xact_lock key of the claims that count mails in flight per domain
# (core.db.setup_lock uses 7319002).
CONCURRENCY_LOCK = 7319014
# A slot frees when a worker records an answer, which nobody announces: while mails are
# held back, the queue looks again this soon (the holder's own run takes more as it goes).
RECHECK = dt.timedelta(seconds=5)


def due_condition(now):
    """Outgoing mails whose time has come (scheduled and next attempt both past)."""
    return ((OutgoingMail.state == "outgoing")
            & (OutgoingMail.scheduled_at.is_null() | (OutgoingMail.scheduled_at <= now))
            & (OutgoingMail.next_attempt_at.is_null() | (OutgoingMail.next_attempt_at <= now)))


def free(now):
    """Mails nobody holds: never claimed, or their lease ran out."""
    return OutgoingMail.lease_until.is_null() | (OutgoingMail.lease_until < now)


def concurrency_limits(host) -> dict:
    """`{domain: (limit, entry as written)}` of `mail_domain_concurrency` (empty: no limit)."""
    try:
        return domain_concurrency(host.config.value("mail_domain_concurrency"))
    except ValueError as exc:  # the key is checked at start; this is for a config changed since
        raise ConfigError(f"config key 'mail_domain_concurrency': {exc}") from None


def limit_of(limits: dict, domain: str):
    """The (limit, entry) that applies to `domain`, or None."""
    return limits.get(domain) or limits.get("*")


def recipient_domain(db):
    """SQL for the recipient's domain as `pacing.domain_of` reads it: after the last `@`,
    lower case, without a trailing dot ('' for no address). SQLite cannot search from the
    right: after the first `@` serves every address but a quoted local part holding an `@`,
    where rtrim() by every character but `@` leaves `local@`, which replace() cuts
    (PostgreSQL: a regular expression, dearer than strpos() for the common case).
    (SQLite's lower() folds ASCII only; the limits name ASCII domains.)"""
    to = pw.fn.COALESCE(M.email_to, "")
    position = pw.fn.strpos if is_postgres(db) else pw.fn.instr
    first = pw.fn.substr(to, position(to, "@") + 1)
    if is_postgres(db):
        last = pw.fn.regexp_replace(to, "^.*@", "")
    else:
        last = pw.fn.replace(to, pw.fn.rtrim(to, pw.fn.replace(to, "@", "")), "")
    after = pw.Case(None, [(position(first, "@") > 0, last)], first)
    return pw.fn.lower(pw.fn.rtrim(after, "."))


def in_flight(host, now) -> dict:
    """{domain: mails in flight}: outgoing mails under a lease that still runs, less those
    their worker journaled as sent (`journal.sent_ids`: answered, their row not yet
    applied). One query, through the lease index (leased rows are a few batches, whatever
    the queue's size; the journal is read once)."""
    domain = recipient_domain(host.db)
    query = (M.select(domain.alias("domain"), pw.fn.COUNT(M.id))
             .where((M.lease_owner > "") & (M.lease_until >= now) & (M.state == "outgoing")
                    & M.id.not_in(journal.sent_ids()))
             .group_by(pw.SQL("1")))  # by position: PostgreSQL takes a repeated expression with
    return dict(query.tuples())       # its own parameters for a different one


def _within_limits(db, limits, flying, cond):
    """(query, its id column): ids of the mails matching `cond` that may be claimed now: per
    domain, in id order, as many as its limit leaves beside the `flying` ones (`in_flight`).
    One statement whatever the number of rows or domains: each due mail's domain is read
    once, domains already full are left out, and a window function ranks the candidates of
    limited domains (the others, without `*`, are taken as they come)."""
    named = {d: n for d, (n, _) in limits.items() if d != "*"}
    star = limits["*"][0] if "*" in limits else None
    room = {d: n for d, n in named.items()}
    for d, n in flying.items():
        most = named.get(d, star)
        if most is not None:
            room[d] = most - n
    full = sorted(d for d, r in room.items() if r <= 0)
    due = (M.select(M.id, recipient_domain(db).alias("domain")).where(cond)
           .cte("due_mail", materialized=True))
    open_ = ~due.c.domain.in_(full) if full else pw.SQL("1 = 1")
    limited = due.c.domain.in_(sorted(named)) if star is None else pw.SQL("1 = 1")
    ranked = (pw.Select([due], [due.c.id, due.c.domain, pw.fn.ROW_NUMBER().over(
        partition_by=[due.c.domain], order_by=[due.c.id]).alias("rank")])
        .where(open_ & limited).alias("ranked"))
    left = sorted((d, r) for d, r in room.items() if r > 0)
    allowed = pw.Case(ranked.c.domain, left, star) if left else pw.Value(star)
    chosen = pw.Select([ranked], [ranked.c.id]).where(ranked.c.rank <= allowed)
    if star is None:  # domains without a limit: every due mail of theirs
        chosen = chosen + pw.Select([due], [due.c.id]).where(open_ & ~due.c.domain.in_(sorted(named)))
    rows = chosen.alias("allowed")
    return pw.Select([rows], [rows.c.id]).with_cte(due), rows.c.id


def _id_among(db, candidates):
    """The condition "OutgoingMail.id is one of the ids `candidates` selects", for the claim's
    UPDATE. On PostgreSQL as `= ANY(ARRAY(candidates))`: the subquery runs once, first (an
    InitPlan, where FOR UPDATE SKIP LOCKED takes its row locks), and the UPDATE reaches those
    rows through the primary key. As `IN (candidates)` the planner chose the join itself and,
    with a queue just filled and its statistics stale, chose badly: the ranking of the limited
    path re-run for every due row; on the plain path, once analyzed, at times a hash semi join
    over a sequential scan of the whole table (EXPLAIN ANALYZE, 20,000 due mails). Neither
    form helps a queue whose statistics predate it (before autovacuum's ANALYZE): the locking
    subquery then sorts every due mail to take the first (100,000 due: 120-420 ms a claim)."""
    if is_postgres(db):
        return OutgoingMail.id == pw.fn.ANY(pw.NodeList((pw.SQL("ARRAY"), candidates)))
    return OutgoingMail.id.in_(candidates)


def claim(host, owner: str, limit: int, where=None, due=True) -> tuple[str, int]:
    """Lease up to `limit` outgoing mails under a fresh claim token and commit; returns
    (token, how many). Later statements address the claimed rows by their token, so no
    statement carries a list of thousands of ids.

    On PostgreSQL the candidates are locked FOR UPDATE SKIP LOCKED so workers never wait
    on each other nor take the same row; SQLite's write lock serialises claims. What the
    workers whose lease ran out journaled is applied first (`journal.apply_expired`). Under
    `mail_domain_concurrency` the claim takes only what each domain's limit leaves."""
    now = host.clock.now()
    token = f"{owner}:{uuid.uuid4().hex[:12]}"
    cond = free(now) & (due_condition(now) if due else (OutgoingMail.state == "outgoing"))
    if where is not None:
        cond &= where
    limits = concurrency_limits(host)
    with host.transaction():
        # A dead worker's journal first: the mails it sent must not look claimable (and its
        # mail in flight is then taken over as in doubt).
        journal.apply_expired(host, now)
        if limits:
            if is_postgres(host.db):
                host.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (CONCURRENCY_LOCK,))
            # No row locks here: they would lock every due mail the ranking reads; the lock
            # above keeps claimers apart and the UPDATE re-checks `cond` on each row it takes.
            room, mail_id = _within_limits(host.db, limits, in_flight(host, now), cond)
            candidates = room.order_by(mail_id).limit(limit)
            taken = (OutgoingMail.update(lease_owner=token, lease_until=now + lease(host))
                     .where(_id_among(host.db, candidates) & cond).execute())
            if taken < limit and OutgoingMail.select().where(cond).exists():
                # Held back (what is left matched and was not taken): come back for them soon.
                scheduler.trigger(host, ACTION_CODE, now + RECHECK)
        else:
            candidates = OutgoingMail.select(OutgoingMail.id).where(cond).order_by(OutgoingMail.id).limit(limit)
            if is_postgres(host.db):
                candidates = candidates.for_update(skip_locked=True)
            taken = (OutgoingMail.update(lease_owner=token, lease_until=now + lease(host))
                     .where(_id_among(host.db, candidates) & free(now)).execute())
    return token, taken


def claimable(host, now) -> int:
    """How many due mails a claim could take now: those nobody holds, less those the
    concurrency limits hold back (they wait for a slot, not for this worker)."""
    cond = due_condition(now) & free(now)
    limits = concurrency_limits(host)
    if not limits:
        return OutgoingMail.select().where(cond).count()
    room = _within_limits(host.db, limits, in_flight(host, now), cond)[0].alias("room")
    return pw.Select([room], [pw.fn.COUNT(pw.SQL("*"))]).scalar(host.db)


def held_back_reasons(host, rows, due=True) -> dict:
    """{mail id: why it waits} for the listed mails (dicts with id, state, email_to,
    scheduled_at, next_attempt_at, lease_until) that are free and due (or, `due=False`, sent
    now anyway) but whose domain has as many mails in flight as `mail_domain_concurrency`
    allows. One query."""
    limits = concurrency_limits(host)
    if not limits or not rows:
        return {}
    now = host.clock.now()
    flying = in_flight(host, now)
    reasons = {}
    for row in rows:
        times = ("scheduled_at", "next_attempt_at", "lease_until") if due else ("lease_until",)
        if row["state"] != "outgoing" or any(row[k] is not None and row[k] > now for k in times):
            continue
        domain = domain_of(row["email_to"])
        entry = limit_of(limits, domain)
        if entry is not None and flying.get(domain, 0) >= entry[0]:
            reasons[row["id"]] = (f"waiting: {flying[domain]} mail(s) to {domain} in flight, as many "
                                  f"as mail_domain_concurrency allows ({entry[1]})")
    return reasons
