"""Scheduled actions: intervals, triggers, leases, progress, and giving up on broken ones.

A worker claims a due action by taking its lease with a conditional UPDATE (and, on
PostgreSQL, by selecting it FOR UPDATE SKIP LOCKED first, so workers never wait on each
other). The claim is committed before the handler runs: no transaction is held open
while a handler talks to the network, and a dead worker's lease simply expires.
"""
import dataclasses
import datetime as dt
import os
import re
import socket
import time
import traceback

import peewee as pw

from .db import is_postgres
from .errors import Conflict, DatabaseUnavailable, InvalidInput, NotFound
from .models import CronAction, CronTrigger

FLOOR_MINUTES = 5
RECOMMENDED_MINUTES = 15
UNITS = {"m": "minutes", "min": "minutes", "minutes": "minutes", "h": "hours", "hours": "hours",
         "d": "days", "days": "days"}
MAX_FAILURES = 5
FAILURE_SPAN = dt.timedelta(days=7)
LEASE_GRACE = dt.timedelta(seconds=60)


@dataclasses.dataclass(frozen=True)
class ActionSpec:
    """A scheduled action a plugin provides. `code` is its stable key."""
    code: str
    name: str
    handler: object
    interval_number: int = 1
    interval_type: str = "hours"
    priority: int = 10
    plugin: str = "core"
    # True: every worker may run it at the same time, so K workers share its work (the
    # handler itself must split the work safely, e.g. the mail queue's row claims). No
    # action lease is taken; the interval, triggers and failure count work as usual.
    parallel: bool = False
    # False: never deactivated however long it keeps failing (an action whose standstill
    # stops a whole service, like the mail queue: its doctor check reports the failures).
    deactivate_on_failures: bool = True

    def for_plugin(self, plugin: str) -> "ActionSpec":
        return dataclasses.replace(self, plugin=plugin)


class RunContext:
    """What a handler gets: the host, its time budget, and a way to report progress."""

    def __init__(self, host, action, budget_seconds: float, leased: bool = True):
        self.host = host
        self.action = action
        self.budget = budget_seconds
        self.started = host.clock.now()
        self._t0 = time.monotonic()
        self.done = 0
        self.remaining = 0
        # A run under the action's lease (not a parallel action) renews it on progress and
        # notices when another worker took it over (the lease had run out): `lost`.
        self.leased = leased
        self.lost = False

    def time_left(self) -> float:
        return self.budget - (time.monotonic() - self._t0)

    def should_stop(self) -> bool:
        """True once the budget is spent, or once `postroom serve` was asked to stop
        (SIGTERM): commit what you did and return."""
        stopping = getattr(self.host, "serve_stop", None)
        return self.lost or self.time_left() <= 0 or (stopping is not None and stopping.is_set())

    def progress(self, done: int, remaining: int) -> None:
        """Report how much was done and how much is left; remaining > 0 re-runs soon.

        Also renews the action's lease, if this run still owns it (one conditional
        UPDATE, in the caller's transaction when there is one). A run whose lease another
        worker took over is `lost`: `should_stop()` turns true and nothing it reports is
        written over the new holder's."""
        self.done, self.remaining = int(done), int(remaining)
        if not self.leased or self.lost:
            return
        renewed = (CronAction.update(lease_until=_lease_until(self.host, self.host.clock.now()))
                   .where(_owned(self.action)).execute())
        if renewed != 1:
            self._lose()

    def _lose(self):
        if not self.lost:
            self.lost = True
            holder = CronAction.get_by_id(self.action.id).lease_owner
            self.host.log.warning("cron %r: the lease of %s was taken over by %s (it had run out); "
                                  "this run stops and records nothing", self.action.name,
                                  self.action.lease_owner, holder or "nobody")


def _owned(action):
    """The action's row while `action.lease_owner` still holds its lease."""
    return (CronAction.id == action.id) & (CronAction.lease_owner == action.lease_owner)


def interval_text(number: int, unit: str) -> str:
    """'1 day', '15 minutes': the unit singular for one."""
    return f"{number} {unit[:-1] if number == 1 and unit.endswith('s') else unit}"


def interval_delta(number: int, unit: str) -> dt.timedelta:
    return dt.timedelta(**{unit: number})


MAX_INTERVAL_DAYS = 3660  # ten years: longer is a typo, and timedelta overflows past 999999999 days


def parse_interval(text: str) -> tuple[int, str]:
    """'15m', '1h', '2 days' → (number, unit); refuses anything under the 5-minute floor."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]+)\s*", text or "")
    if not match or match.group(2).lower() not in UNITS:
        raise InvalidInput(f"bad interval {text!r}: use e.g. 15m, 1h or 1d")
    number, unit = int(match.group(1)), UNITS[match.group(2).lower()]
    try:
        too_long = interval_delta(number, unit) > dt.timedelta(days=MAX_INTERVAL_DAYS)
    except OverflowError:
        too_long = True
    if too_long:
        raise InvalidInput(f"interval {text.strip()} is too long: the longest allowed is {MAX_INTERVAL_DAYS}d")
    if interval_delta(number, unit) < dt.timedelta(minutes=FLOOR_MINUTES):
        raise InvalidInput(f"interval {text.strip()} is below the {FLOOR_MINUTES}-minute floor; "
                           f"the shortest allowed is {FLOOR_MINUTES}m ({RECOMMENDED_MINUTES}m is recommended)")
    return number, unit


def sync_actions(host, specs) -> None:
    """Create the rows of newly provided actions; existing rows keep the operator's
    interval, activity and next call."""
    now = host.clock.now()
    for spec in specs:
        (CronAction.insert(code=spec.code, name=spec.name, plugin=spec.plugin,
                           interval_number=spec.interval_number, interval_type=spec.interval_type,
                           priority=spec.priority, nextcall=now)
         .on_conflict_ignore().execute())


def runnable_codes(host) -> list[str]:
    return list(host.action_specs)


def get_action(host, name_or_code: str) -> CronAction:
    action = CronAction.get_or_none((CronAction.name == name_or_code) | (CronAction.code == name_or_code))
    if action is None or action.code not in host.action_specs:
        known = "; ".join(sorted(s.name for s in host.action_specs.values())) or "none"
        raise NotFound(f"no scheduled action {name_or_code!r} (enabled ones: {known})")
    return action


def set_interval(host, name: str, text: str) -> tuple[CronAction, str | None]:
    """Change an action's interval. Returns (action, warning or None)."""
    number, unit = parse_interval(text)
    action = get_action(host, name)
    with host.transaction():
        CronAction.update(interval_number=number, interval_type=unit).where(CronAction.id == action.id).execute()
    warning = None
    if interval_delta(number, unit) < dt.timedelta(minutes=RECOMMENDED_MINUTES):
        warning = (f"an interval under {RECOMMENDED_MINUTES} minutes is not recommended: a run may not "
                   f"finish before the next is due")
    host.log.info("cron %r interval set to %s %s", action.name, number, unit)
    return CronAction.get_by_id(action.id), warning


def set_active(host, name: str, active: bool) -> CronAction:
    action = get_action(host, name)
    with host.transaction():
        values = {"active": active}
        if active:
            values.update(failure_count=0, first_failure_at=None)
        CronAction.update(**values).where(CronAction.id == action.id).execute()
    host.log.info("cron %r %s", action.name, "enabled" if active else "disabled")
    return CronAction.get_by_id(action.id)


def trigger(host, code: str, at: dt.datetime | None = None) -> None:
    """Ask for an earlier run of action `code` at `at` (default now). Inside the caller's
    transaction when there is one."""
    action = CronAction.get_or_none(CronAction.code == code)
    if action is None:
        raise NotFound(f"no scheduled action {code!r}")
    CronTrigger.insert(cron=action, call_at=at or host.clock.now()).execute()


def parallel_codes(host) -> list[str]:
    return [code for code, spec in host.action_specs.items() if spec.parallel]


def _lease_free(host, now):
    """The action is not held by a run, or it is a parallel one (which takes no lease)."""
    free = CronAction.lease_until.is_null() | (CronAction.lease_until < now)
    parallel = parallel_codes(host)
    return (free | CronAction.code.in_(parallel)) if parallel else free


def _due_condition(host, now):
    triggered = (CronTrigger.select(pw.SQL("1")).where((CronTrigger.cron == CronAction.id)
                                                       & (CronTrigger.call_at <= now)))
    return (CronAction.active
            & CronAction.code.in_(runnable_codes(host) or [""])
            & _lease_free(host, now)
            & ((CronAction.nextcall <= now) | pw.fn.EXISTS(triggered)))


def _lease_until(host, now):
    return now + dt.timedelta(seconds=budget_seconds(host)) + LEASE_GRACE


def budget_seconds(host) -> float:
    return host.config.getfloat("cron_time_budget", 300.0)


def claim_next_due(host, owner: str) -> CronAction | None:
    """Take the lease of the most urgent due action, or return None."""
    now = host.clock.now()
    with host.transaction():
        query = (CronAction.select().where(_due_condition(host, now))
                 .order_by(CronAction.priority, CronAction.nextcall, CronAction.id).limit(1))
        if is_postgres(host.db):
            query = query.for_update(skip_locked=True)
        action = query.first()
        if action is None:
            return None
        if host.action_specs[action.code].parallel:
            action.lease_owner = owner  # for the log only: a parallel action holds no lease
            action.lease_until = None   # (a manual run's lease, if any, is not ours)
            return action
        taken = (CronAction.update(lease_owner=owner, lease_until=_lease_until(host, now))
                 .where((CronAction.id == action.id)
                        & (CronAction.lease_until.is_null() | (CronAction.lease_until < now)))
                 .execute())
    return CronAction.get_by_id(action.id) if taken == 1 else None


def claim(host, action: CronAction, owner: str) -> CronAction:
    """Take this action's lease now (for a manual run); Conflict while another run holds it."""
    now = host.clock.now()
    with host.transaction():
        taken = (CronAction.update(lease_owner=owner, lease_until=_lease_until(host, now))
                 .where((CronAction.id == action.id)
                        & (CronAction.lease_until.is_null() | (CronAction.lease_until < now)))
                 .execute())
    if taken != 1:
        current = CronAction.get_by_id(action.id)
        raise Conflict(f"{action.name!r} is running now (worker {current.lease_owner}, lease until "
                       f"{current.lease_until:%Y-%m-%d %H:%M:%S} UTC); try again when it has finished")
    return CronAction.get_by_id(action.id)


def run_claimed(host, action: CronAction) -> dict:
    """Run a claimed action's handler and record the outcome; releases the lease."""
    spec = host.action_specs[action.code]
    leased = action.lease_until is not None  # parallel actions run without a lease
    ctx = RunContext(host, action, budget_seconds(host), leased=leased)
    host.log.info("cron %r starting (worker %s)", action.name, action.lease_owner)
    t0 = time.monotonic()
    error = None
    database_error = False
    try:
        spec.handler(host, ctx)
    except Exception as exc:  # noqa: BLE001 - a handler's failure is recorded, never fatal
        error = f"{type(exc).__name__}: {exc}"
        database_error = isinstance(exc, (pw.OperationalError, pw.InterfaceError, DatabaseUnavailable))
        # The traceback once per error, not once per retry of an outage (disk full).
        seen = host.cron_errors_logged
        detail = "" if seen.get(action.code) == error else "\n" + traceback.format_exc()
        seen[action.code] = error
        host.log.error("cron %r failed: %s%s", action.name, error, detail)
    duration = time.monotonic() - t0
    if error is None:
        host.cron_errors_logged.pop(action.code, None)
    return _finish(host, action, ctx, error, duration, retry_soon=database_error)


# A run that failed because the database could not be written (disk full, server away) is
# tried again this soon, not after its interval: the work is still there.
DATABASE_RETRY = dt.timedelta(seconds=30)


def _finish(host, action, ctx, error, duration, retry_soon=False) -> dict:
    now = host.clock.now()
    step = interval_delta(action.interval_number, action.interval_type)
    values = {"last_run_at": ctx.started, "last_duration": duration}
    if ctx.leased:
        values.update(lease_owner=None, lease_until=None)
    partial = error is None and ctx.remaining > 0
    nextcall = action.nextcall
    if not partial:
        while nextcall <= now:  # whole intervals, so the rhythm stays on its grid
            nextcall += step
        values["nextcall"] = nextcall
    deactivated = False
    if error is None:
        values.update(failure_count=0, first_failure_at=None, last_error=None,
                      last_result=f"done {ctx.done}, remaining {ctx.remaining}")
    else:
        first = action.first_failure_at or ctx.started
        count = action.failure_count + 1
        values.update(failure_count=count, first_failure_at=first, last_error=error[:2000],
                      last_result="failed")
        spec = host.action_specs.get(action.code)
        if count >= MAX_FAILURES and now - first >= FAILURE_SPAN and (spec is None or spec.deactivate_on_failures):
            values["active"] = False
            deactivated = True
    with host.transaction():
        where = _owned(action) if ctx.leased else (CronAction.id == action.id)
        if CronAction.update(**values).where(where).execute() != 1:
            # Overran and taken over: the new holder's lease and results stay as they are.
            ctx._lose()
            return {"name": action.name, "error": error, "done": ctx.done, "remaining": ctx.remaining,
                    "partial": False, "deactivated": False, "duration": duration, "lost": True}
        CronTrigger.delete().where((CronTrigger.cron == action.id) & (CronTrigger.call_at <= ctx.started)).execute()
        if partial:
            # Continue soon: a trigger at now makes it due again on the next tick.
            CronTrigger.insert(cron=action.id, call_at=now).execute()
        elif retry_soon:
            CronTrigger.insert(cron=action.id, call_at=now + DATABASE_RETRY).execute()
    if deactivated:
        host.log.warning("cron %r deactivated: it failed %s times in a row since %s; last error: %s",
                         action.name, values["failure_count"], values["first_failure_at"], error)
    host.log.info("cron %r finished in %.2fs: %s", action.name, duration,
                  values.get("last_result"))
    return {"name": action.name, "error": error, "done": ctx.done, "remaining": ctx.remaining,
            "partial": partial, "deactivated": deactivated, "duration": duration, "lost": False}


def run_due(host, owner: str | None = None, limit: int = 100) -> list[dict]:
    """Run due actions one after the other until none is due (or `limit` runs)."""
    owner = owner or worker_name()
    results = []
    stopping = getattr(host, "serve_stop", None)
    for _ in range(limit):
        if stopping is not None and stopping.is_set():
            break
        action = claim_next_due(host, owner)
        if action is None:
            break
        results.append(run_claimed(host, action))
    return results


def run_by_hand(host, name: str) -> dict:
    action = get_action(host, name)
    claimed = claim(host, action, worker_name("manual"))
    return run_claimed(host, claimed)


def next_due_at(host) -> dt.datetime | None:
    """When the next action becomes due (to sleep until then)."""
    codes = runnable_codes(host) or [""]
    nextcall = (CronAction.select(pw.fn.MIN(CronAction.nextcall))
                .where(CronAction.active & CronAction.code.in_(codes)).scalar())
    trig = (CronTrigger.select(pw.fn.MIN(CronTrigger.call_at)).join(CronAction)
            .where(CronAction.active & CronAction.code.in_(codes)).scalar())
    from .clock import aware
    values = [aware(v) if isinstance(v, dt.datetime) else None for v in (nextcall, trig)]
    values = [v for v in values if v is not None]
    return min(values) if values else None


def listing(host) -> list[dict]:
    rows = []
    pending = dict(CronTrigger.select(CronTrigger.cron, pw.fn.MIN(CronTrigger.call_at))
                   .group_by(CronTrigger.cron).tuples())
    from .clock import aware
    for a in CronAction.select().where(CronAction.code.in_(runnable_codes(host) or [""])).order_by(CronAction.priority, CronAction.name):
        trig = pending.get(a.id)
        rows.append({"name": a.name, "plugin": a.plugin, "interval": interval_text(a.interval_number, a.interval_type),
                     "nextcall": a.nextcall.isoformat(), "active": a.active, "priority": a.priority,
                     "running": bool(a.lease_until and a.lease_until > host.clock.now()),
                     "lease_owner": a.lease_owner,
                     "trigger_at": aware(trig).isoformat() if isinstance(trig, dt.datetime) else None,
                     "last_run_at": a.last_run_at.isoformat() if a.last_run_at else None,
                     "last_result": a.last_result, "failure_count": a.failure_count,
                     "last_error": a.last_error})
    return rows


def worker_name(prefix: str = "worker") -> str:
    return f"{prefix}:{socket.gethostname()}:{os.getpid()}"
