"""The core's checks, each in its ok, warn and fail form."""
import datetime as dt
import uuid

from postroom.core import records
from postroom.core.models import CronAction, Message, Notification, Partner, Record


def test_admin_address_missing_temporary_and_real(doctor_host, checks):
    host = doctor_host()
    found, _ = checks(host)
    assert found["admin_email"]["status"] == "warn"
    assert found["admin_email"]["remedy"] == "run: postroom init"

    records.ensure_admin(host)
    found, code = checks(host)
    assert found["admin_email"]["status"] == "fail" and code == 1
    assert "temporary address admin@example.invalid" in found["admin_email"]["finding"]
    assert found["admin_email"]["remedy"] == "set a real one: postroom admin set-email ADDRESS"

    records.set_admin_email(host, "ops@example.com")
    found, code = checks(host)
    assert found["admin_email"] == {"name": "admin_email", "status": "ok", "source": "core",
                                    "finding": "the admin partner's address is ops@example.com",
                                    "remedy": ""}
    assert code == 0


def _notify(host, rows, age=dt.timedelta(hours=1)):
    """Email notifications: rows of (status, failure_type), one message each."""
    now = host.clock.now()
    with host.transaction():
        partner = Partner.create(name="Ann", email="ann@example.com", email_normalized="ann@example.com",
                                 created_at=now)
        record = Record.create(model="generic", name="r", created_at=now)
        for i, (status, failure_type) in enumerate(rows):
            msg = Message.create(record=record, model="generic", body="", created_at=now,
                                 message_id=f"<n{i}.{uuid.uuid4().hex}@example.com>")
            Notification.create(message=msg, partner=partner, notification_type="email", status=status,
                                failure_type=failure_type, updated_at=now - age)
    return msg.id


def test_failures_of_the_last_day_by_type(doctor_host, checks, clock):
    host = doctor_host(plugins=["mail_queue"])
    found, _ = checks(host)
    assert found["failures_24h"]["status"] == "ok"

    last = _notify(host, [("sent", None), ("exception", "mail_email_invalid"),
                          ("exception", "mail_email_invalid"), ("bounce", None)])
    found, _ = checks(host)
    assert found["failures_24h"]["status"] == "warn"
    assert found["failures_24h"]["finding"] == ("3 failed in the last 24 hours: "
                                                "mail_email_invalid 2, bounce 1")
    assert f"postroom message show {last}" in found["failures_24h"]["remedy"]

    _notify(host, [("exception", "mail_limit")], age=dt.timedelta(minutes=1))
    found, code = checks(host)
    assert found["failures_24h"]["status"] == "fail" and code == 1
    assert "mail_limit 1" in found["failures_24h"]["finding"]
    assert "daily limit" in found["failures_24h"]["remedy"]

    clock.advance(hours=25)
    found, _ = checks(host)
    assert found["failures_24h"]["status"] == "ok"


def test_bounce_rate_over_seven_days(doctor_host, checks, clock):
    host = doctor_host()
    found, _ = checks(host)
    assert found["bounce_rate_7d"] == {"name": "bounce_rate_7d", "status": "ok", "source": "core",
                                       "finding": "no email sent in the last 7 days", "remedy": ""}

    _notify(host, [("sent", None)] * 99 + [("bounce", None)], age=dt.timedelta(days=8))
    found, _ = checks(host)
    assert found["bounce_rate_7d"]["status"] == "ok"  # older than 7 days: not counted

    _notify(host, [("sent", None)] * 97 + [("bounce", None)] * 3)
    found, _ = checks(host)
    assert found["bounce_rate_7d"]["status"] == "warn"
    assert found["bounce_rate_7d"]["finding"].startswith("bounce rate 3.0% over the last 7 days (3 of 100 mails)")

    _notify(host, [("bounce", None)] * 5)
    found, code = checks(host)
    assert found["bounce_rate_7d"]["status"] == "fail" and code == 1
    assert "7.6% over the last 7 days (8 of 105 mails)" in found["bounce_rate_7d"]["finding"]

    found, _ = checks(doctor_host(config={"doctor_bounce_fail_percent": 10}))
    assert found["bounce_rate_7d"]["status"] == "warn"


def test_scheduled_actions_failing_deactivated_disabled_and_overdue(doctor_host, checks, clock, cli_run):
    host = doctor_host(plugins=["auto_vacuum"])
    name = "Base: Auto-vacuum internal data"
    key = f"cron:{name}"
    found, _ = checks(host)
    assert found["cron"]["status"] == "ok"
    assert found["cron"]["finding"] == "1 scheduled action(s) active, none failing or overdue"

    CronAction.update(failure_count=2, last_error="OperationalError: disk full\ntraceback...").execute()
    found, _ = checks(host)
    assert found[key]["status"] == "warn"
    assert found[key]["finding"] == f"'{name}' failed 2 time(s) in a row; last error: OperationalError: disk full"

    CronAction.update(failure_count=5, active=False).execute()
    found, code = checks(host)
    assert found[key]["status"] == "fail" and code == 1
    assert found[key]["remedy"].endswith(f"postroom cron enable '{name}'")

    cli_run(host, "cron", "enable", name)
    cli_run(host, "cron", "disable", name)
    found, _ = checks(host)
    assert found[key]["status"] == "warn" and found[key]["finding"] == f"'{name}' is disabled: it never runs"

    cli_run(host, "cron", "enable", name)
    clock.advance(hours=2)  # due since it was enabled, and nothing ran it
    found, _ = checks(host)
    assert found[key]["status"] == "warn"
    assert "has not run" in found[key]["finding"] and "postroom serve" in found[key]["remedy"]

    # A run that is being continued (its next call stays in the past) is not overdue.
    CronAction.update(last_run_at=clock.now()).execute()
    found, _ = checks(host)
    assert found["cron"]["status"] == "ok"


def test_the_log_check_says_where_the_logs_are_or_that_they_are_gone(doctor_host, checks, tmp_path):
    host = doctor_host()
    found, _ = checks(host)
    assert found["logs"]["status"] == "ok"
    assert str(tmp_path / "logs" / "postroom.log") in found["logs"]["finding"]

    import shutil
    shutil.rmtree(tmp_path / "logs")
    found, code = checks(host)
    assert found["logs"]["status"] == "fail" and code == 1
    assert found["logs"]["finding"] == f"the log folder {tmp_path / 'logs'} does not exist: nothing is being logged"


def test_which_failures_are_the_deployments_is_the_mail_plugins_knowledge(doctor_host, checks):
    # The core knows no failure type by name: without a mail service a mail_limit
    # failure (left by a mail plugin since disabled) is one more failure, not the server's.
    host = doctor_host()
    _notify(host, [("exception", "mail_limit")])
    found, _ = checks(host)
    assert found["failures_24h"]["status"] == "warn"
    assert "daily limit" not in found["failures_24h"]["remedy"]
