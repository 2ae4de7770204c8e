"""The daily action: every plugin in turn, failures isolated, progress continued soon."""
import datetime as dt
import json
import types

from postroom.core import scheduler
from postroom.core.models import CronAction, CronTrigger, Notification, Parameter
from postroom.core.plugins import hookimpl

from .seed import seed_core
from .test_core_vacuum import seed_core_more

ACTION = "Base: Auto-vacuum internal data"


def _plugin(name, vacuum):
    """A plugin object registered for every deployment (no PLUGIN attribute)."""
    return types.SimpleNamespace(__name__=name, postroom_vacuum=hookimpl(vacuum))


def test_the_action_is_daily_and_listed_once_the_plugin_is_enabled(make_host, cli_run):
    host = make_host(plugins=["auto_vacuum"])

    rows = json.loads(cli_run(host, "cron", "list", "--json").output)

    row = next(r for r in rows if r["name"] == ACTION)
    assert row["interval"] == "1 day" and row["active"] is True


def test_a_plugin_whose_vacuum_raises_does_not_stop_the_others(make_host, cli_run):
    calls = []

    def broken(host, batch_size, dry_run):
        from postroom.core.models import Partner
        Partner.delete().execute()  # must be rolled back with the failing call
        raise RuntimeError("table mail_mail is locked")

    def tidy(host, dry_run):  # accepts a subset of the arguments: called with those
        calls.append(dry_run)
        return {"removed": {"widgets": 2}, "remaining": 0}
    host = make_host(plugins=["auto_vacuum"],
                     extra=[_plugin("broken", broken), _plugin("tidy", tidy)])
    ids = seed_core(host)

    result = cli_run(host, "vacuum")

    assert result.exit_code == 1
    assert "the vacuum of broken failed and was rolled back: RuntimeError: table mail_mail is locked" in result.output
    assert calls == [False]
    assert ["tidy", "widgets", "2"] in [line.split() for line in result.output.splitlines()]
    assert Notification.get_or_none(Notification.id == ids["email_sent_old"]) is None  # core ran, last
    from postroom.core.models import Partner
    assert Partner.select().count() == 1  # the broken plugin's delete was rolled back
    log = (host.config.path_of("log_dir") + "/postroom.log")
    assert "vacuum of broken failed" in open(log).read()


def test_plugins_are_vacuumed_before_the_core(make_host):
    from postroom.plugins.auto_vacuum.service import vacuum_all
    order = []

    def first(host):
        order.append("first")
    host = make_host(plugins=["auto_vacuum"], extra=[_plugin("first", first)])

    report = vacuum_all(host)

    assert [e["plugin"] for e in report["plugins"]] == ["first", "core"]
    assert order == ["first"]


def test_a_partial_run_is_continued_soon_and_the_last_one_waits_a_day(make_host, clock):
    # No time budget: each run does one chunk per plugin, then reports what remains.
    host = make_host(plugins=["auto_vacuum"], config={"vacuum_batch_size": 2, "cron_time_budget": 0})
    seed_core_more(host, 5, "old")
    action = CronAction.get(CronAction.name == ACTION)

    first = scheduler.run_due(host, limit=1)

    assert first[0]["partial"] is True and first[0]["done"] == 2 and first[0]["remaining"] > 0
    assert Notification.select().count() == 3
    assert CronTrigger.select().where(CronTrigger.cron == action.id).count() == 1
    assert CronAction.get_by_id(action.id).nextcall == action.nextcall  # not moved: continued soon

    results = scheduler.run_due(host, limit=10)

    assert [r["done"] for r in results] == [2, 1]
    assert results[-1]["partial"] is False and results[-1]["remaining"] == 0
    assert Notification.select().count() == 0
    assert CronAction.get_by_id(action.id).nextcall == action.nextcall + dt.timedelta(days=1)
    assert scheduler.run_due(host) == []


def test_a_slow_plugin_never_starves_the_next_one(make_host):
    from postroom.plugins.auto_vacuum.service import vacuum_all
    calls = {"big": 0, "small": 0}

    def big(host, batch_size):
        calls["big"] += 1
        return {"removed": {"rows": batch_size}, "remaining": 1}

    def small(host):
        calls["small"] += 1
        return {"removed": {"rows": 1}, "remaining": 0}
    host = make_host(plugins=["auto_vacuum"], extra=[_plugin("big", big), _plugin("small", small)])

    report = vacuum_all(host, should_stop=lambda: True)

    assert calls == {"big": 1, "small": 1}
    assert report["remaining"] == 1


def test_a_plugin_that_reports_work_but_removes_nothing_does_not_spin(make_host):
    from postroom.plugins.auto_vacuum.service import vacuum_all
    calls = []

    def stuck(host):
        calls.append(1)
        return {"removed": {"rows": 0}, "remaining": 5}
    host = make_host(plugins=["auto_vacuum"], extra=[_plugin("stuck", stuck)])

    report = vacuum_all(host)

    assert len(calls) == 1 and report["remaining"] == 0


def test_the_last_run_is_remembered_for_the_doctor(make_host, clock):
    def broken(host):
        raise ValueError("boom")
    host = make_host(plugins=["auto_vacuum"], extra=[_plugin("broken", broken)])

    scheduler.run_due(host)

    last = json.loads(Parameter.get(Parameter.key == "auto_vacuum.last_run").value)
    assert last["failing"]["broken"]["error"] == "ValueError: boom"
    assert CronAction.get(CronAction.name == ACTION).failure_count == 0  # the run itself succeeded
