"""`postroom doctor` through the real CLI: the report, --json, the exit code, broken checks."""
import json
import types

from postroom.core import records
from postroom.core.doctor import Check
from postroom.core.plugins import PluginInfo, hookimpl


def _contributor(name, checks_fn, plugin_info=False):
    ns = types.SimpleNamespace(__name__=name, postroom_doctor_checks=hookimpl(checks_fn))
    if plugin_info:
        ns.PLUGIN = PluginInfo(name, "test checks")
    return ns


def test_the_report_gives_status_finding_and_remedy_per_check(doctor_host, cli_run):
    host = doctor_host()
    records.ensure_admin(host)

    result = cli_run(host, "doctor")

    lines = result.output.splitlines()
    i = lines.index("[FAIL] admin_email")
    assert lines[i + 1].strip().startswith("the admin partner still has the temporary address")
    assert lines[i + 2].strip() == "-> set a real one: postroom admin set-email ADDRESS"
    assert "[OK  ] dns.spf" in lines
    assert lines[-1] == "1 failed, 0 warning(s), 7 ok"
    assert result.exit_code == 1


def test_exit_code_is_zero_when_nothing_fails_even_with_warnings(doctor_host, cli_run, dns_server):
    dns_server.records["_dmarc.example.com"] = ["v=DMARC1; p=none"]
    host = doctor_host()
    records.ensure_admin(host, "ops@example.com")

    result = cli_run(host, "doctor")

    assert result.exit_code == 0
    assert "[WARN] dns.dmarc" in result.output
    assert result.output.splitlines()[-1] == "0 failed, 1 warning(s), 7 ok"


def test_json_lists_every_check_with_its_source_and_a_summary(doctor_host, cli_run):
    host = doctor_host()
    records.ensure_admin(host, "ops@example.com")

    result = cli_run(host, "doctor", "--json")

    data = json.loads(result.output)
    assert data["summary"] == {"ok": 8, "warn": 0, "fail": 0}
    assert [c["name"] for c in data["checks"]] == [
        "admin_email", "dns.spf", "dns.dmarc", "failures_24h", "bounce_rate_7d", "cron",
        "logs", "http.exposure"]
    assert all(set(c) == {"name", "status", "finding", "remedy", "source"} for c in data["checks"])
    assert {c["source"] for c in data["checks"]} == {"core"}


def test_a_check_that_raises_is_a_failure_naming_its_plugin_and_the_rest_still_run(doctor_host, cli_run):
    def broken(host):
        raise ConnectionError("inbound gateway did not answer\nmore detail")

    def fine(host):
        return [Check("widgets", "ok", "all widgets present")]
    host = doctor_host(extra=[_contributor("broken_checks", broken), _contributor("fine_checks", fine)])
    records.ensure_admin(host, "ops@example.com")

    result = cli_run(host, "doctor", "--json")

    data = json.loads(result.output)
    assert result.exit_code == 1
    failed = [c for c in data["checks"] if c["status"] == "fail"]
    assert failed == [{"name": "broken_checks.checks", "status": "fail", "source": "broken_checks",
                       "finding": "the checks of broken_checks raised ConnectionError: inbound gateway did not answer",
                       "remedy": "details in postroom.log; report it to the maintainer of broken_checks"}]
    assert data["checks"][-1]["name"] == "widgets"
    assert data["checks"][0]["source"] == "core"


def test_a_check_returning_something_else_than_checks_fails(doctor_host, checks):
    host = doctor_host(extra=[_contributor("sloppy", lambda host: ["all good"])])

    found, code = checks(host)

    assert found["sloppy.checks"]["status"] == "fail" and code == 1
    assert "returned str instead of core.doctor.Check" in found["sloppy.checks"]["finding"]


def test_enabled_plugins_report_in_the_order_they_were_enabled(doctor_host, cli_run):
    second = _contributor("second", lambda host: [Check("b", "ok", "b")], plugin_info=True)
    first = _contributor("first", lambda host: [Check("a", "warn", "a", "do a")], plugin_info=True)
    host = doctor_host(extra=[second, first], plugins=["first", "second"])

    data = json.loads(cli_run(host, "doctor", "--json").output)

    assert [(c["source"], c["name"]) for c in data["checks"]][-2:] == [("first", "a"), ("second", "b")]
