"""Rows of every core kind, old and new, in each state, written directly for vacuum tests.

`seed_core(host)` returns {label: id} for notifications and triggers so a test can say
exactly which rows must go and which must stay.
"""
import datetime as dt

from postroom.core.models import CronAction, CronTrigger, Message, Notification, Partner, Record

OLD = dt.timedelta(days=200)   # past the 180-day notification retention
NEW = dt.timedelta(days=10)

# label: (notification_type, status, is_read, age, goes with the default retention)
NOTIFICATIONS = {
    "email_sent_old": ("email", "sent", False, OLD, True),
    "email_sent_new": ("email", "sent", False, NEW, False),
    "email_canceled_old": ("email", "canceled", False, OLD, True),
    "email_canceled_new": ("email", "canceled", False, NEW, False),
    "inbox_read_old": ("inbox", "sent", True, OLD, True),
    "inbox_unread_old": ("inbox", "sent", False, OLD, False),
    "inbox_read_new": ("inbox", "sent", True, NEW, False),
    "email_ready_old": ("email", "ready", False, OLD, False),
    "email_exception_old": ("email", "exception", False, OLD, False),
    "email_bounce_old": ("email", "bounce", False, OLD, False),
    "email_exception_new": ("email", "exception", False, NEW, False),
}

# label: (action active, call_at offset from now, goes)
TRIGGERS = {
    "active_two_days_ago": (True, -dt.timedelta(days=2), True),
    "active_two_hours_ago": (True, -dt.timedelta(hours=2), False),
    "active_future": (True, dt.timedelta(hours=3), False),
    "inactive_one_hour_ago": (False, -dt.timedelta(hours=1), True),
    "inactive_future": (False, dt.timedelta(hours=1), False),
}


def seed_core(host) -> dict:
    now = host.clock.now()
    ids = {}
    with host.transaction():
        partner = Partner.create(name="Ann", email="ann@example.com", email_normalized="ann@example.com",
                                 created_at=now - OLD)
        record = Record.create(model="generic", name="Old project", created_at=now - OLD)
        for label, (channel, status, is_read, age, _) in NOTIFICATIONS.items():
            message = Message.create(record=record, model="generic", subject=label, body=f"<p>{label}</p>",
                                     message_id=f"<{label}@example.com>", created_at=now - age)
            ids[label] = Notification.create(
                message=message, partner=partner, notification_type=channel, status=status,
                is_read=is_read, updated_at=now - age,
                failure_type="mail_email_invalid" if status == "exception" else None).id
        ids["orphan_message"] = Message.create(record=None, subject="no record", body="",
                                               message_id="<orphan@example.com>",
                                               created_at=now - OLD * 3).id
        actions = {}
        for active in (True, False):
            actions[active] = CronAction.create(code=f"test.seed.{active}", name=f"Seed action {active}",
                                                plugin="test", nextcall=now, active=active)
        for label, (active, offset, _) in TRIGGERS.items():
            ids[label] = CronTrigger.create(cron=actions[active], call_at=now + offset).id
    return ids


def expected_gone(table: dict) -> set:
    return {label for label, spec in table.items() if spec[-1]}
