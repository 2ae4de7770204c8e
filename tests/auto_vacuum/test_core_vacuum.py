"""What the auto-vacuum removes from the core tables, and what it never touches."""
import json

from postroom.core.models import CronTrigger, Message, Notification

from .seed import NOTIFICATIONS, TRIGGERS, expected_gone, seed_core


def _alive(ids, model, labels):
    present = {row[0] for row in model.select(model.id).tuples()}
    return {label for label in labels if ids[label] in present}


def test_vacuum_removes_exactly_old_delivered_notifications_and_spent_triggers(make_host, db_url, cli_run):
    host = make_host(plugins=["auto_vacuum"], db_url=db_url)
    ids = seed_core(host)
    messages_before = Message.select().count()

    result = cli_run(host, "vacuum", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    core = next(e for e in report["plugins"] if e["plugin"] == "core")
    assert core["removed"] == {"notifications": 3, "cron_triggers": 2, "attachments": 0,
                               "attachment_content": 0}
    assert core["error"] is None and report["remaining"] == 0
    assert _alive(ids, Notification, NOTIFICATIONS) == set(NOTIFICATIONS) - expected_gone(NOTIFICATIONS)
    assert _alive(ids, CronTrigger, TRIGGERS) == set(TRIGGERS) - expected_gone(TRIGGERS)
    assert Message.select().count() == messages_before  # the chatter is never vacuumed


def test_dry_run_counts_what_would_go_and_removes_nothing(make_host, db_url, cli_run):
    host = make_host(plugins=["auto_vacuum"], db_url=db_url)
    ids = seed_core(host)

    result = cli_run(host, "vacuum", "--dry-run")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["PLUGIN", "KIND", "WOULD_REMOVE"]
    assert ["core", "notifications", "3"] in [line.split() for line in lines]
    assert ["core", "cron_triggers", "2"] in [line.split() for line in lines]
    assert lines[-1].startswith("would remove 5 row(s)")
    assert _alive(ids, Notification, NOTIFICATIONS) == set(NOTIFICATIONS)
    assert _alive(ids, CronTrigger, TRIGGERS) == set(TRIGGERS)


def test_retention_is_configurable_and_chunks_still_reach_every_row(make_host, db_url, cli_run):
    host = make_host(plugins=["auto_vacuum"], db_url=db_url,
                     config={"notification_retention_days": 7, "vacuum_batch_size": 1})
    ids = seed_core(host)

    report = json.loads(cli_run(host, "vacuum", "--json").output)

    core = next(e for e in report["plugins"] if e["plugin"] == "core")
    # With 7 days, the 10-day-old delivered ones go too; failed, ready and unread never.
    assert core["removed"]["notifications"] == 6
    assert core["chunks"] >= 6
    assert _alive(ids, Notification, NOTIFICATIONS) == {
        "inbox_unread_old", "email_ready_old", "email_exception_old", "email_bounce_old",
        "email_exception_new"}


def test_a_chunk_runs_the_same_number_of_statements_whatever_the_backlog(make_host):
    from postroom.core.vacuum import vacuum
    host = make_host()
    seed_core_more(host, 5, "small")
    with host.transaction():
        before = host.statements()
        vacuum(host, batch_size=1000, dry_run=False)
        small = host.statements() - before
    seed_core_more(host, 300, "large")
    with host.transaction():
        before = host.statements()
        vacuum(host, batch_size=1000, dry_run=False)
        large = host.statements() - before
    assert Notification.select().count() == 0
    assert large == small


def seed_core_more(host, n, tag):
    """`n` more old sent notifications, set-based."""
    from postroom.core.models import Partner, Record
    from .seed import OLD
    now = host.clock.now()
    with host.transaction():
        record = Record.create(model="generic", name=tag, created_at=now)
        rows = [{"record": record.id, "model": "generic", "body": "", "message_id": f"<{tag}{i}@x>",
                 "created_at": now - OLD} for i in range(n)]
        Message.insert_many(rows).execute()
        partner = Partner.create(name=tag, email=f"{tag}@example.com", email_normalized=f"{tag}@example.com",
                                 created_at=now)
        mids = [m.id for m in Message.select(Message.id).where(Message.record == record)]
        Notification.insert_many([{"message": m, "partner": partner.id, "notification_type": "email",
                                   "status": "sent", "updated_at": now - OLD} for m in mids]).execute()


def test_a_new_sweep_starts_over_and_finds_rows_that_aged_below_the_last_one(make_host, clock):
    from postroom.plugins.auto_vacuum.service import vacuum_all
    host = make_host(plugins=["auto_vacuum"], config={"vacuum_batch_size": 1})
    seed_core_more(host, 3, "young")
    Notification.update(updated_at=clock.now()).execute()  # the lowest ids are young
    seed_core_more(host, 3, "old")

    assert vacuum_all(host)["removed"] == 3
    assert Notification.select().count() == 3

    clock.advance(days=181)
    assert vacuum_all(host)["removed"] == 3
    assert Notification.select().count() == 0
