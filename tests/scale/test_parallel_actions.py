"""A parallel scheduled action (the mail queue's) is taken by every worker at once; an
ordinary one by one worker at a time. This is what lets K workers drain one queue."""
from postroom.core import scheduler
from postroom.core.plugins import PluginInfo, hookimpl
from postroom.core.scheduler import ActionSpec


def _handler(host, run):
    run.progress(1, 0)


class TwoActions:
    PLUGIN = PluginInfo("two_fx", "one parallel action, one exclusive")

    @hookimpl
    def postroom_scheduled_actions(self):
        return [ActionSpec("fx.shared", "Shared", _handler, priority=1, parallel=True),
                ActionSpec("fx.single", "Single", _handler, priority=2)]


def test_every_worker_may_run_a_parallel_action_but_only_one_an_exclusive_one(make_host, db_url):
    host = make_host(db_url=db_url, available={"two_fx": TwoActions()}, plugins=["two_fx"])
    first = scheduler.claim_next_due(host, "worker:a:1")
    second = scheduler.claim_next_due(host, "worker:b:2")
    assert (first.code, second.code) == ("fx.shared", "fx.shared")
    assert {r["name"]: r["running"] for r in scheduler.listing(host)}["Shared"] is False  # no lease taken
    scheduler.set_active(host, "Shared", False)
    assert scheduler.claim_next_due(host, "worker:a:1").code == "fx.single"
    assert scheduler.claim_next_due(host, "worker:b:2") is None  # leased by a


def test_the_mail_queue_action_is_parallel(make_host, db_url):
    host = make_host(db_url=db_url, plugins=["mail_queue"])
    assert host.action_specs["mail_queue.process"].parallel
    runs = [scheduler.claim_next_due(host, f"worker:w:{i}") for i in range(3)]
    assert {r.code for r in runs} == {"mail_queue.process"}
    result = scheduler.run_claimed(host, runs[0])
    assert result["error"] is None and not result["partial"]  # empty queue: back to its interval
    assert scheduler.claim_next_due(host, "worker:w:9") is None
