"""Vacuum of the plugin's own data (bounded chunks, dry run, the blacklist never) and the
doctor's check of the marketing queue's head."""
import datetime as dt

from postroom.plugins.mail_marketing.maintenance import vacuum
from postroom.plugins.mail_marketing.models import Blacklist, BounceEvent, Trace

from .conftest import drain, make_campaign, make_list


def _campaign_with_canceled_traces(run, host, tmp_path, n):
    make_list(run, host, tmp_path, "news", [f"u{i}@example.org,U{i}" for i in range(n)] + ["ok@example.org,Ok"])
    for i in range(n):
        run(host, "blacklist", "add", f"u{i}@example.org")
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    drain(host)
    return cid


def _vacuum(host, batch, dry_run=False):
    with host.transaction():
        return vacuum(host, batch, dry_run)


def test_canceled_traces_older_than_six_months_go_in_bounded_chunks(mk, run, tmp_path, clock):
    host = mk()
    _campaign_with_canceled_traces(run, host, tmp_path, 5)
    assert _vacuum(host, 2)["removed"]["canceled_traces"] == 0   # too young
    clock.advance(days=183)
    assert _vacuum(host, 2, dry_run=True) == {"removed": {"canceled_traces": 5, "bounce_records": 0},
                                              "remaining": 0}
    assert Trace.select().count() == 6
    first = _vacuum(host, 2)
    assert first == {"removed": {"canceled_traces": 2, "bounce_records": 0}, "remaining": 1}
    assert _vacuum(host, 2)["remaining"] == 1
    last = _vacuum(host, 2)
    assert last["removed"]["canceled_traces"] == 1 and last["remaining"] == 0
    # The sent trace stays, and so does every blacklist entry.
    assert [t.status for t in Trace.select()] == ["sent"]
    assert Blacklist.select().count() == 5


def test_vacuum_statements_do_not_grow_with_the_chunk(mk, run, tmp_path, clock):
    host = mk()
    _campaign_with_canceled_traces(run, host, tmp_path, 30)
    clock.advance(days=200)
    counts = []
    for batch in (2, 25):
        before = host.statements()
        _vacuum(host, batch)
        counts.append(host.statements() - before)
    # At most a select and a delete per kind (a kind found empty is not asked again in
    # the same sweep), whether the chunk is 2 rows or 25.
    assert counts[1] <= counts[0] <= 4


def test_bounce_records_older_than_the_rule_window_are_vacuumed(mk, clock):
    host = mk()
    now = clock.now()
    BounceEvent.insert_many([{"email_normalized": "a@example.org", "bounced_at": now - dt.timedelta(weeks=w)}
                             for w in (1, 14, 20)]).execute()
    assert _vacuum(host, 10)["removed"]["bounce_records"] == 2
    assert BounceEvent.select().count() == 1


def test_the_vacuum_hook_answers_for_the_plugin(mk):
    host = mk()
    with host.transaction():
        results = host.hook.postroom_vacuum(host=host, batch_size=10, dry_run=True)
    assert {"removed": {"canceled_traces": 0, "bounce_records": 0}, "remaining": 0} in results


def test_postroom_vacuum_removes_old_canceled_traces_through_the_auto_vacuum_plugin(mk, run, tmp_path, clock):
    import json
    host = mk()
    host.enable_plugin("auto_vacuum")
    _campaign_with_canceled_traces(run, host, tmp_path, 3)
    clock.advance(days=190)
    report = json.loads(run(host, "vacuum", "--json").output)
    ours = [p for p in report["plugins"] if p["plugin"] == "mail_marketing"]
    assert ours and ours[0]["removed"]["canceled_traces"] == 3 and ours[0]["error"] is None
    assert [t.status for t in Trace.select()] == ["sent"] and Blacklist.select().count() == 3


def test_the_canceled_trace_vacuum_reads_the_partial_index_on_both_engines(mk, run, tmp_path, clock, db_url):
    # The status goes as a literal: compared with a bound parameter, neither planner may use
    # an index made for status = 'canceled', and the vacuum would read every trace.
    host = mk(db_url=db_url)
    _campaign_with_canceled_traces(run, host, tmp_path, 3)
    clock.advance(days=183)
    seen, execute = [], host.db.execute_sql

    def recording(sql, params=None):
        if sql.startswith("SELECT") and "'canceled'" in sql:
            seen.append((sql, params))
        return execute(sql, params)
    host.db.execute_sql = recording
    try:
        assert _vacuum(host, 10)["removed"]["canceled_traces"] == 3
    finally:
        del host.db.execute_sql
    assert seen
    explain = "EXPLAIN " if host.db.engine == "postgresql" else "EXPLAIN QUERY PLAN "
    if host.db.engine == "postgresql":
        host.db.execute_sql("SET enable_seqscan = off")  # a tiny table: judge only whether it could
    for sql, params in seen:
        plan = " ".join(str(row) for row in host.db.execute_sql(explain + sql, params).fetchall())
        assert "marketing_trace_canceled_created_at" in plan, plan
