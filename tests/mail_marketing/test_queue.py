"""The marketing process queue: creation order, head-of-line, a stuck head and its cancel,
bounded batches, and the `campaign queue` listing. The seed page's example, as a test."""
import json

from postroom.core import scheduler
from postroom.core.plugins import PluginInfo, hookimpl
from postroom.plugins.mail_marketing import process
from postroom.plugins.mail_marketing.models import Trace

from .conftest import contacts, drain, make_campaign, make_list, show

PROCESS = "Mail Marketing: Process queue"


def _states(run, host, *ids):
    return [show(run, host, i)["state"] for i in ids]


def _three_campaigns(run, host, tmp_path, clock):
    """Campaign_1 (created 1 Jan), Campaign_2 (2 Jan), Campaign_3 (3 Jan), all sent."""
    ids = []
    for n in (1, 2, 3):
        ids.append(make_campaign(run, host, tmp_path, "news", subject=f"Campaign_{n}"))
        clock.advance(days=1)
    for cid in ids:
        run(host, "campaign", "send", cid)
    return ids


def test_seed_example_the_second_campaign_waits_until_the_first_is_done(mk, run, tmp_path, clock, db_url):
    host = mk(db_url=db_url, marketing_batch_size=2, marketing_run_limit=2)
    make_list(run, host, tmp_path, "news", contacts(5))
    c1, c2, c3 = _three_campaigns(run, host, tmp_path, clock)
    seen = []
    for _ in range(12):
        scheduler.run_by_hand(host, PROCESS)
        seen.append(tuple(_states(run, host, c1, c2, c3)))
        # Never two campaigns in flight, and never a later one before an earlier one is done.
        traced = {c: Trace.select().where(Trace.campaign == c).count() for c in (c1, c2, c3)}
        if traced[c2]:
            assert seen[-1][0] == "done"
        if traced[c3]:
            assert seen[-1][1] == "done"
    assert seen[0] == seen[1] == ("sending", "in_queue", "in_queue")
    # The run that finishes Campaign_1 may go on with Campaign_2 with what is left of its batch.
    assert seen[2] == ("done", "sending", "in_queue")
    assert seen[-1] == ("done", "done", "done")


def test_the_queue_lists_campaigns_in_processing_order_with_the_head_first(mk, run, tmp_path, clock):
    host = mk(marketing_batch_size=2, marketing_run_limit=2)
    make_list(run, host, tmp_path, "news", contacts(5))
    c1, c2, c3 = _three_campaigns(run, host, tmp_path, clock)
    scheduler.run_by_hand(host, PROCESS)
    clock.advance(hours=3)
    rows = json.loads(run(host, "campaign", "queue", "--json").output)
    assert [(r["id"], r["head"], r["state"]) for r in rows] == [
        (c1, True, "sending"), (c2, False, "in_queue"), (c3, False, "in_queue")]
    assert rows[0]["at_head_for"] == "3h00m" and rows[0]["processed"] == 2 and rows[0]["remaining"] == 3
    table = run(host, "campaign", "queue").output
    assert table.splitlines()[0].split()[:4] == ["POSITION", "ID", "SUBJECT", "STATE"]
    drain(host)
    assert "the marketing queue is empty" in run(host, "campaign", "queue").output


class TemplateError(Exception):
    pass


class BrokenTemplates:
    """A third-party plugin whose personalisation fails for one campaign's mails."""
    PLUGIN = PluginInfo("broken_templates", "personalises campaign mails (badly)")

    def __init__(self):
        self.broken = set()

    @hookimpl(optionalhook=True)
    def postroom_campaign_batch(self, host, campaign, mails):
        if campaign.subject in self.broken:
            raise TemplateError(f"unknown placeholder {{first_name}} in {campaign.subject}")
        for mail in mails:
            mail["headers"]["X-Campaign"] = campaign.subject


def test_seed_example_a_stuck_head_holds_the_others_until_it_is_canceled(mk, run, sink, tmp_path, clock):
    broken = BrokenTemplates()
    broken.broken.add("Campaign_1")
    host = mk(extra=[broken])
    host.enable_plugin("broken_templates")
    make_list(run, host, tmp_path, "news", contacts(2))
    c1, c2, c3 = _three_campaigns(run, host, tmp_path, clock)
    drain(host)
    clock.advance(days=2)
    drain(host)  # the daily run and the retry trigger try again: still stuck
    assert _states(run, host, c1, c2, c3) == ["in_queue", "in_queue", "in_queue"]
    assert sink.received() == []
    rows = json.loads(run(host, "campaign", "queue", "--json").output)
    head = rows[0]
    assert head["id"] == c1 and head["head"] and head["errors"] >= 2
    assert "unknown placeholder {first_name}" in head["last_error"]
    assert head["at_head_for"].startswith("2d")
    check = process_doctor(host)
    assert check.status == "fail" and f"postroom campaign cancel {c1}" in check.remedy
    assert "to let the others go" in check.remedy
    # Take Campaign_1 out of the queue: the other two go, in order.
    run(host, "campaign", "cancel", c1)
    drain(host)
    assert _states(run, host, c1, c2, c3) == ["draft", "done", "done"]
    got = sink.wait_for(4)
    assert [m.message["X-Campaign"] for m in got] == ["Campaign_2"] * 2 + ["Campaign_3"] * 2
    # Fixed, it can be sent again; it now goes behind nobody.
    broken.broken.clear()
    run(host, "campaign", "send", c1)
    drain(host)
    assert _states(run, host, c1) == ["done"]


def process_doctor(host):
    from postroom.plugins.mail_marketing.maintenance import doctor_checks
    return next(c for c in doctor_checks(host) if c.name == "campaigns.queue_head")


def test_doctor_warns_when_a_healthy_head_has_held_the_queue_for_more_than_a_day(mk, run, tmp_path, clock):
    host = mk(marketing_batch_size=1, marketing_run_limit=1)
    assert process_doctor(host).status == "ok"
    make_list(run, host, tmp_path, "news", contacts(3))
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    scheduler.run_by_hand(host, PROCESS)
    assert process_doctor(host).status == "ok"
    clock.advance(days=1, minutes=1)
    check = process_doctor(host)
    assert check.status == "warn" and f"campaign {cid}" in check.finding


def test_each_run_handles_a_bounded_batch_and_asks_to_be_run_again(mk, run, tmp_path):
    host = mk(marketing_batch_size=3, marketing_run_limit=7)
    make_list(run, host, tmp_path, "news", contacts(20))
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    result = scheduler.run_by_hand(host, PROCESS)
    assert (result["done"], result["remaining"], result["partial"]) == (7, 13, True)
    assert Trace.select().count() == 7
    runs = [r for r in drain(host) if r["name"] == PROCESS]
    assert [r["done"] for r in runs] == [7, 6] and runs[-1]["remaining"] == 0
    assert show(run, host, cid)["sent"] == 20


def test_batch_statements_do_not_grow_with_the_batch(mk, run, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "small", contacts(10))
    make_list(run, host, tmp_path, "big", contacts(400, start=100))
    from postroom.core import tokens
    tokens.secret(host), tokens.secret(host)  # the deployment secret exists and is read once
    counts = []
    for name, size in (("small", 10), ("big", 400)):
        cid = make_campaign(run, host, tmp_path, name, subject=name)
        run(host, "campaign", "send", cid)
        campaign = process.head_campaign(host)
        before = host.statements()
        process.process_batch(host, campaign, size + 1)
        counts.append(host.statements() - before)
    assert counts[0] == counts[1]


def test_a_head_that_fails_mid_way_is_retried_later_and_resumes_where_it_stopped(mk, run, sink, tmp_path, clock):
    broken = BrokenTemplates()
    host = mk(extra=[broken], marketing_batch_size=2, marketing_run_limit=2)
    host.enable_plugin("broken_templates")
    make_list(run, host, tmp_path, "news", contacts(4))
    cid = make_campaign(run, host, tmp_path, "news", subject="Campaign_1")
    run(host, "campaign", "send", cid)
    scheduler.run_by_hand(host, PROCESS)          # first batch goes out
    broken.broken.add("Campaign_1")
    drain(host)                                   # the second batch fails
    data = show(run, host, cid)
    assert data["state"] == "sending" and data["pending"] == 2
    assert "unknown placeholder" in data["last_error"]
    broken.broken.clear()
    clock.advance(minutes=59)
    drain(host)
    assert show(run, host, cid)["state"] == "sending"     # not yet: retried after an hour
    clock.advance(minutes=1)
    drain(host)
    data = show(run, host, cid)
    assert data["state"] == "done" and data["sent"] == 4 and data["last_error"] is None
    assert sorted(m.rcpt_tos[0] for m in sink.wait_for(4)) == [f"user{i}@example.org" for i in range(4)]


class QueueDueAtBatch:
    """Records, at each campaign batch, whether the mail queue action is due already."""

    def __init__(self):
        self.due = []

    @hookimpl(optionalhook=True)
    def postroom_campaign_batch(self, host, campaign, mails):
        from postroom.core.models import CronAction, CronTrigger
        queue = scheduler.get_action(host, "Mail: Email Queue Manager")
        self.due.append(CronTrigger.select().join(CronAction).where(
            (CronAction.id == queue.id) & (CronTrigger.call_at <= host.clock.now())).exists())


def test_the_mail_queue_is_due_once_the_first_batch_of_a_run_is_committed(mk, run, tmp_path, db_url):
    # A second worker starts sending the first batch while this run prepares the next.
    probe = QueueDueAtBatch()
    host = mk(db_url=db_url, extra=[probe], marketing_batch_size=2, marketing_run_limit=6)
    make_list(run, host, tmp_path, "news", contacts(6))
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    scheduler.run_by_hand(host, PROCESS)
    assert probe.due == [False, True, True]
    drain(host)
    assert show(run, host, cid)["state"] == "done"
