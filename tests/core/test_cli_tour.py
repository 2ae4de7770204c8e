"""The CLI as a new user meets it (issue 10, section 4), through the real command."""
import json
import os
import subprocess
import sys

from tests.core.test_config import ROOT, run, write_config


def test_output_piped_into_head_ends_quietly(tmp_path):
    path = write_config(tmp_path)
    assert run(path, "init").exit_code == 0
    csv = tmp_path / "people.csv"
    csv.write_text("name,email\n" + "".join(f"P{i},p{i}@example.com\n" for i in range(3000)))
    assert run(path, "partner", "import", str(csv)).exit_code == 0
    env = dict(os.environ, PYTHONPATH=ROOT)
    writer = subprocess.Popen([sys.executable, "-m", "postroom.cli", "--config", str(path), "partner", "list"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    head = subprocess.run(["head", "-n", "2"], stdin=writer.stdout, capture_output=True, timeout=60)
    writer.stdout.close()
    err = writer.stderr.read().decode()
    writer.wait(timeout=60)
    assert len(head.stdout.splitlines()) == 2
    assert "BrokenPipeError" not in err and "Traceback" not in err and "Exception ignored" not in err, err


def test_intervals_say_1_day_not_1_days(tmp_path):
    path = write_config(tmp_path)
    run(path, "init")
    run(path, "plugins", "enable", "auto_vacuum")
    rows = {r["name"]: r for r in json.loads(run(path, "cron", "list", "--json").stdout)}
    assert rows["Base: Auto-vacuum internal data"]["interval"] == "1 day"
    assert run(path, "cron", "set-interval", "Base: Auto-vacuum internal data", "1h").stdout.strip() == \
        "Base: Auto-vacuum internal data: every 1 hour"
    assert "every 2 hours" in run(path, "cron", "set-interval", "Base: Auto-vacuum internal data", "2h").stdout


def test_campaign_send_says_truthfully_what_happens_next(tmp_path):
    path = write_config(tmp_path)
    run(path, "init")
    run(path, "plugins", "enable", "mail_marketing")
    run(path, "list", "create", "news")
    body = tmp_path / "b.html"
    body.write_text("<p>Hi</p>")
    cid = run(path, "campaign", "create", "--subject", "S", "--body-file", str(body), "--list", "news").stdout.split()[-1]
    said = run(path, "campaign", "send", cid).stdout
    assert "`postroom serve` sends it" in said and 'postroom cron run "Mail Marketing: Process queue"' in said
    assert "runs now" not in said


def test_queue_list_shows_when_a_scheduled_mail_is_due(tmp_path):
    path = write_config(tmp_path)
    run(path, "init")
    run(path, "admin", "set-email", "admin@example.com")
    run(path, "plugins", "enable", "mail_queue")
    assert run(path, "mail", "send", "--to", "ann@example.org", "--subject", "Later", "--body", "B",
               "--at", "2031-01-05T18:00").exit_code == 0
    header, row = run(path, "queue", "list").stdout.splitlines()[:2]
    assert "SCHEDULED_AT" in header and "2031-01-05 18:00:00" in row
    [mail] = json.loads(run(path, "queue", "list", "--json").stdout)
    assert mail["scheduled_at"].startswith("2031-01-05T18:00:00")


def test_the_readme_tour_pastes_as_commands_and_uses_the_domain_it_sets_up():
    import re
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    lines = [line.split("  #")[0].rstrip() for block in blocks for line in block.splitlines()
             if line.startswith("postroom ")]
    alternatives = [line for line in lines if " / postroom" in line or re.search(r" \| (-|\w+$)", line)]
    assert not alternatives, f"alternatives written inside commands: {alternatives}"
    assert any("printf '[postroom]\\ndomains = example.com\\n' > postroom.cfg" in b for b in blocks)
    # Every alias or route the tour types is on the domain it set up.
    routed = [line for line in lines if line.startswith(("postroom route test", "postroom inbound deliver"))]
    assert routed and all("@example.com" in line for line in routed)


def test_serve_says_what_it_runs_and_how_to_stop_it(tmp_path):
    import signal
    import time
    from tests.support.smtp import free_port
    port = free_port()
    path = write_config(tmp_path, serve_poll_seconds="0.1", inbound_port=str(port), http_port="0")
    run(path, "init")
    run(path, "plugins", "enable", "inbound")
    run(path, "plugins", "enable", "auto_vacuum")
    proc = subprocess.Popen([sys.executable, "-m", "postroom.cli", "--config", str(path), "serve"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        seen, deadline = [], time.time() + 30
        while time.time() < deadline and not any("stop with Ctrl-C" in line for line in seen):
            seen.append(proc.stderr.readline())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = "".join(seen)
    assert "postroom serve: worker" in text and "role all" in text
    assert "scheduled actions: Base: Auto-vacuum internal data" in text
    assert f"127.0.0.1:{port}" in text
    assert "stop with Ctrl-C or SIGTERM" in text
