"""The auto-vacuum's own doctor check: how its last run went."""
import json
import types

from postroom.core import scheduler
from postroom.core.plugins import hookimpl


def _checks(cli_run, host):
    data = json.loads(cli_run(host, "doctor", "--json").output)
    return {c["name"]: c for c in data["checks"]}


def test_never_run_then_ran_then_a_plugin_failing_then_failing_for_a_week(make_host, cli_run, clock):
    state = {"broken": False}

    def flaky(host):
        if state["broken"]:
            raise RuntimeError("no such table: mail_mail")
        return {"removed": {"mails": 4}, "remaining": 0}
    plugin = types.SimpleNamespace(__name__="flaky", postroom_vacuum=hookimpl(flaky))
    host = make_host(plugins=["auto_vacuum"], extra=[plugin],
                     config={"domains": "localhost"})  # no DNS lookups in this test

    check = _checks(cli_run, host)["vacuum.last_run"]
    assert check["status"] == "ok" and check["source"] == "auto_vacuum"
    assert check["finding"] == "the auto-vacuum has not run yet (it runs daily)"

    scheduler.run_due(host)
    check = _checks(cli_run, host)["vacuum.last_run"]
    assert check["status"] == "ok"
    assert check["finding"] == "last auto-vacuum 2026-01-05 09:00 UTC removed 4 row(s) (flaky 4)"

    state["broken"] = True
    clock.advance(days=1)
    scheduler.run_due(host)
    check = _checks(cli_run, host)["vacuum.last_run"]
    assert check["status"] == "warn"
    assert check["finding"] == ("the vacuum of flaky has failed since 2026-01-06 09:00 UTC (last run "
                                "2026-01-06 09:00): flaky: RuntimeError: no such table: mail_mail")

    for _ in range(8):
        clock.advance(days=1)
        scheduler.run_due(host)
    result = cli_run(host, "doctor", "--json")
    check = {c["name"]: c for c in json.loads(result.output)["checks"]}["vacuum.last_run"]
    assert check["status"] == "fail" and result.exit_code == 1
    assert "has failed since 2026-01-06 09:00 UTC" in check["finding"]
