"""The core's share of the auto-vacuum: old notifications and spent scheduler triggers.

The daily action lives in the `auto_vacuum` plugin; it calls `postroom_vacuum` on every
registered implementation, the core's included (`core.host._CoreHooks`). What the core
removes, and what it never removes:

- notifications `sent` or `canceled` whose last change is older than
  `notification_retention_days` (180); an in-app notification must also have been read.
  `ready` ones are still to be delivered and `exception` / `bounce` ones are the red
  envelope an operator has not dealt with yet: those stay whatever their age;
- scheduler triggers in the past whose action is inactive, or whose time passed more
  than `trigger_retention_hours` (24) ago: nobody will ever act on them;
- attachments of chatter messages that no longer exist (their record was deleted);
- attachment content (rows and files in the file store) that no attachment references
  any more, an hour after it was last stored (`core.attachments.collect_garbage`);
- never a chatter message: the chatter is the record's history.

Every kind is removed in chunks of at most `batch_size` rows (select ids in order, delete
those ids), so the statement count of one call does not depend on the table size and the
caller's transaction stays short.
"""
import datetime as dt
import weakref

import peewee as pw

from .db import delete_chunk
from .models import CronAction, CronTrigger, Notification

DEFAULT_NOTIFICATION_DAYS = 180
DEFAULT_TRIGGER_HOURS = 24


def notification_cutoff(host) -> dt.datetime:
    days = host.config.getint("notification_retention_days", DEFAULT_NOTIFICATION_DAYS)
    return host.clock.now() - dt.timedelta(days=days)


def _old_notifications(host):
    # One condition per status, never `status = a OR status = b`: SQLite answers an OR over
    # an index by collecting every matching row before LIMIT applies, which makes each
    # chunk cost as much as the whole backlog.
    cutoff = notification_cutoff(host)
    old = Notification.updated_at < cutoff
    return Notification, [
        (Notification.status == "sent") & old
        & ((Notification.notification_type == "email") | Notification.is_read),
        (Notification.status == "canceled") & old,
    ]


def _spent_triggers(host):
    now = host.clock.now()
    hours = host.config.getint("trigger_retention_hours", DEFAULT_TRIGGER_HOURS)
    inactive = CronTrigger.cron.in_(CronAction.select(CronAction.id).where(~CronAction.active))
    spent = (CronTrigger.call_at < now) & (
        inactive | (CronTrigger.call_at < now - dt.timedelta(hours=hours)))
    return CronTrigger, [spent]


KINDS = {"notifications": _old_notifications, "cron_triggers": _spent_triggers}


# host → {(owner, kind, n): highest id removed so far in the current sweep of that condition, or
# DONE once that condition has nothing left}. A sweep is the series of calls until one
# reports nothing remaining. Resuming after the mark, and not asking again a condition
# already done, keeps every chunk's cost independent of the backlog: otherwise each chunk
# rescans what the earlier ones walked (dead rows on PostgreSQL, or a whole table to find
# no canceled rows) and a million rows take quadratic time. Kept in memory only: a new
# process simply starts a sweep from the first id.
_marks = weakref.WeakKeyDictionary()
DONE = -1


def count(model, condition) -> int:
    return model.select(pw.fn.COUNT(model.id)).where(condition).scalar() or 0


def sweep(host, owner: str, kinds: dict, batch_size: int, dry_run: bool) -> dict:
    """Remove, chunk by chunk, the rows of each kind: `kinds` maps a kind's name to
    `(model, [condition, ...])` or `(model, [condition, ...], before_delete)` where
    `before_delete(ids)` hears of each chunk before it goes (to log it). Plugins use it for their own `postroom_vacuum` so that
    every chunk costs the same whatever the backlog: give each condition one indexed
    equality (one state, one status) and never OR them together."""
    removed, remaining = {}, 0
    marks = _marks.setdefault(host, {})
    for kind, (model, conditions, *told) in kinds.items():
        removed[kind] = 0
        for n, condition in enumerate(conditions):
            if dry_run:
                removed[kind] += count(model, condition)
                continue
            after = marks.get((owner, kind, n), 0)
            if after == DONE:
                continue
            budget = batch_size - removed[kind]
            if budget <= 0:  # at most batch_size rows of a kind per call
                remaining = 1  # not asked yet in this sweep: assume there is work
                continue
            gone, more, last = delete_chunk(model, condition, budget, after, *told)
            removed[kind] += gone
            remaining = max(remaining, more)
            marks[(owner, kind, n)] = last if more else DONE
    if not dry_run and not remaining:
        for key in [k for k in marks if k[0] == owner]:
            del marks[key]  # sweep finished: the next one starts from the first id again
    return {"removed": removed, "remaining": remaining}


def vacuum(host, batch_size: int, dry_run: bool) -> dict:
    """The core's `postroom_vacuum`: see the module docstring for what goes."""
    from . import attachments
    from .models import Message
    result = sweep(host, "core", {kind: build(host) for kind, build in KINDS.items()}, batch_size, dry_run)
    if dry_run:
        orphans, more = 0, 0
    else:
        orphans, more = attachments.remove_orphans("message", Message.select(Message.id), batch_size)
    gone, more_content = attachments.collect_garbage(host, batch_size, dry_run)
    result["removed"]["attachments"] = orphans
    result["removed"]["attachment_content"] = gone
    result["remaining"] = max(result["remaining"], more, more_content)
    return result
