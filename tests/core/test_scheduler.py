"""Scheduled actions: floor, triggers, progress, failures, leases — on both engines."""
import datetime as dt

import pytest

from postroom.core import scheduler
from postroom.core.errors import Conflict, InvalidInput
from postroom.core.models import CronAction, CronTrigger
from tests.core.plugin_fixtures import Actions


@pytest.fixture
def actions():
    return Actions()


@pytest.fixture
def host(make_host, db_url, actions):
    return make_host(db_url=db_url, available={"actions_fx": actions}, plugins=["actions_fx"])


def action(name):
    return CronAction.get(CronAction.name == name)


def test_interval_below_five_minutes_is_refused():
    with pytest.raises(InvalidInput, match="below the 5-minute floor"):
        scheduler.parse_interval("4m")
    assert scheduler.parse_interval("5m") == (5, "minutes")
    assert scheduler.parse_interval("2h") == (2, "hours")


def test_set_interval_under_fifteen_minutes_warns(host):
    updated, warning = scheduler.set_interval(host, "FX: Batch", "10m")
    assert (updated.interval_number, updated.interval_type) == (10, "minutes")
    assert "15 minutes" in warning
    assert scheduler.set_interval(host, "FX: Batch", "15m")[1] is None


def test_cli_refuses_the_floor_with_a_clear_message_and_non_zero_exit(host, cli_run):
    result = cli_run(host, "cron", "set-interval", "FX: Batch", "4m")
    assert result.exit_code != 0
    assert "5-minute floor" in result.stderr and "Traceback" not in result.stderr
    assert action("FX: Batch").interval_number == 1
    ok = cli_run(host, "cron", "set-interval", "FX: Batch", "10m")
    assert ok.exit_code == 0 and "not recommended" in ok.stderr


def test_new_actions_are_due_at_once_and_then_move_by_whole_intervals(host, clock, actions):
    results = scheduler.run_due(host)
    assert {r["name"] for r in results} == {"FX: Batch", "FX: Flaky", "FX: Slow"}
    start = clock.now()
    assert action("FX: Batch").nextcall == start + dt.timedelta(hours=1)
    clock.advance(hours=3, minutes=10)  # missed runs are not replayed: one run, next on the grid
    scheduler.run_due(host)
    assert [r for r in actions.runs if r[0] == "batch"][-1][1] == clock.now()
    assert action("FX: Batch").nextcall == start + dt.timedelta(hours=4)


def test_nothing_runs_before_it_is_due(host, clock, actions):
    scheduler.run_due(host)
    clock.advance(minutes=59)
    assert scheduler.run_due(host) == []


def test_partial_progress_runs_again_soon_and_finished_run_moves_on(host, clock, actions):
    scheduler.run_due(host)                 # first run of everything
    clock.advance(hours=1)
    actions.remaining = [200, 100, 0]
    results = scheduler.run_due(host)
    batch = [r for r in results if r["name"] == "FX: Batch"]
    assert [r["remaining"] for r in batch] == [200, 100, 0]
    assert [r["partial"] for r in batch] == [True, True, False]
    assert action("FX: Batch").nextcall == clock.now() + dt.timedelta(hours=1)
    assert CronTrigger.select().count() == 0


def test_a_trigger_runs_the_action_before_its_next_call(host, clock, actions):
    scheduler.run_due(host)
    with host.transaction():
        scheduler.trigger(host, "fx.flaky", clock.now() + dt.timedelta(minutes=10))
    clock.advance(minutes=9)
    assert scheduler.run_due(host) == []
    clock.advance(minutes=1)
    assert [r["name"] for r in scheduler.run_due(host)] == ["FX: Flaky"]
    assert action("FX: Flaky").nextcall > clock.now() + dt.timedelta(hours=23)  # unchanged rhythm
    assert scheduler.next_due_at(host) is not None


def test_five_failures_within_a_week_keep_the_action_active(host, clock, actions):
    actions.fail = True
    for _ in range(6):
        scheduler.run_due(host)
        clock.advance(days=1)
    row = action("FX: Flaky")
    assert row.active and row.failure_count == 6 and "SMTP server on fire" in row.last_error


def test_failing_five_times_over_more_than_a_week_deactivates_and_logs(host, clock, actions, tmp_path):
    actions.fail = True
    for _ in range(4):
        scheduler.run_due(host)
        clock.advance(days=2)
    assert action("FX: Flaky").active  # 4 failures over 6 days
    scheduler.run_due(host)            # 5th failure, 8 days after the first
    row = action("FX: Flaky")
    assert not row.active and row.failure_count == 5
    log = (tmp_path / "logs" / "postroom.log").read_text()
    assert "'FX: Flaky' deactivated" in log


def test_a_success_resets_the_failure_streak(host, clock, actions):
    actions.fail = True
    scheduler.run_due(host)
    clock.advance(days=1)
    actions.fail = False
    scheduler.run_due(host)
    assert action("FX: Flaky").failure_count == 0


def test_manual_run_is_refused_while_the_action_is_running(host, clock):
    claimed = scheduler.claim_next_due(host, "worker:other:1")
    assert claimed is not None
    with pytest.raises(Conflict, match="is running now"):
        scheduler.run_by_hand(host, claimed.name)
    clock.advance(seconds=scheduler.budget_seconds(host) + 61)  # the lease of a dead worker expires
    assert scheduler.run_by_hand(host, claimed.name)["error"] is None


def test_a_claimed_action_is_not_claimed_again(host):
    first = scheduler.claim_next_due(host, "w1")
    others = [scheduler.claim_next_due(host, "w2") for _ in range(3)]
    assert first.code not in {o.code for o in others if o}


def test_cron_run_warns_that_running_by_hand_is_not_recommended(host, cli_run):
    result = cli_run(host, "cron", "run", "FX: Batch")
    assert result.exit_code == 0
    assert "not recommended" in result.stderr and "FX: Batch: done 1" in result.output


def test_cron_list_shows_the_actions_of_enabled_plugins(host, cli_run):
    import json
    rows = json.loads(cli_run(host, "cron", "list", "--json").output)
    assert {r["name"] for r in rows} == {"FX: Batch", "FX: Flaky", "FX: Slow"}
    host.disable_plugin("actions_fx")
    assert json.loads(cli_run(host, "cron", "list", "--json").output) == []
    assert scheduler.run_due(host) == []


def test_cron_disable_and_enable(host, cli_run):
    assert cli_run(host, "cron", "disable", "FX: Batch").exit_code == 0
    assert not action("FX: Batch").active
    assert "FX: Batch" not in [r["name"] for r in scheduler.run_due(host)]
    assert cli_run(host, "cron", "enable", "FX: Batch").exit_code == 0
    assert action("FX: Batch").active
    missing = cli_run(host, "cron", "run", "No such action")
    assert missing.exit_code != 0 and "no scheduled action" in missing.stderr


def test_a_run_that_overran_and_was_taken_over_leaves_the_new_holders_lease_alone(host, clock, tmp_path):
    target = action("FX: Flaky")
    first = scheduler.claim(host, target, "worker:a:1")
    clock.advance(seconds=scheduler.budget_seconds(host) + 61)  # a's lease runs out...
    second = scheduler.claim(host, target, "worker:b:2")      # ...and b takes the action over
    result = scheduler.run_claimed(host, first)                # a finishes late
    assert result["lost"] is True
    row = action("FX: Flaky")
    assert (row.lease_owner, row.lease_until) == ("worker:b:2", second.lease_until)
    assert row.last_run_at is None  # a's outcome is not written over b's run
    with pytest.raises(Conflict, match="is running now"):  # so no third worker runs it too
        scheduler.run_by_hand(host, "FX: Flaky")
    assert scheduler.run_claimed(host, second)["lost"] is False
    row = action("FX: Flaky")
    assert row.lease_owner is None and row.last_run_at is not None
    log = (tmp_path / "logs" / "postroom.log").read_text()
    assert "the lease of worker:a:1 was taken over by worker:b:2" in log


def test_progress_renews_the_lease_of_its_owner_only(host, clock):
    budget = scheduler.budget_seconds(host)
    claimed = scheduler.claim(host, action("FX: Flaky"), "worker:a:1")
    run = scheduler.RunContext(host, claimed, budget)
    clock.advance(seconds=budget)
    run.progress(10, 5)  # still working: the lease moves on
    assert action("FX: Flaky").lease_until == clock.now() + dt.timedelta(seconds=budget) + scheduler.LEASE_GRACE
    clock.advance(seconds=budget)
    with pytest.raises(Conflict):  # its first lease would have run out by now
        scheduler.claim(host, action("FX: Flaky"), "worker:b:2")
    clock.advance(seconds=61)
    scheduler.claim(host, action("FX: Flaky"), "worker:b:2")  # a went silent: b takes over
    assert not run.lost and not run.should_stop()
    run.progress(20, 0)
    assert run.lost and run.should_stop()
    assert action("FX: Flaky").lease_owner == "worker:b:2"
