"""The core commands through the real click CLI, and bad input handled in one line."""
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from postroom.cli import cli
from postroom.core.models import Partner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def last_word(result):
    return result.output.split()[-1]


def one_line_error(result):
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_init_creates_the_admin_once_and_warns_about_its_temporary_address(make_host, cli_run):
    host = make_host()
    first = cli_run(host, "init")
    assert first.exit_code == 0
    assert "temporary address admin@example.invalid" in first.stderr
    assert "postroom admin set-email" in first.stderr
    again = cli_run(host, "init")
    assert last_word(again) == last_word(first)
    assert Partner.select().count() == 1
    assert cli_run(host, "admin", "set-email", "boss@example.com").exit_code == 0
    assert "temporary" not in cli_run(host, "init").stderr


def test_init_with_a_real_admin_address(make_host, cli_run):
    host = make_host()
    result = cli_run(host, "init", "--admin-email", "admin@example.com")
    assert result.exit_code == 0 and "temporary" not in result.stderr
    assert Partner.get_by_id(int(last_word(result))).email == "admin@example.com"


def test_a_whole_chatter_session(make_host, cli_run):
    host = make_host()
    ann = last_word(cli_run(host, "partner", "add", "Ann Smith", "Ann@Example.com"))
    cli_run(host, "partner", "add", "Bob", "bob@example.com", "--inbox")
    rec = last_word(cli_run(host, "record", "create", "generic", "Website"))
    assert cli_run(host, "record", "follow", "generic", rec, "ann@example.com").exit_code == 0
    assert "already follows" in cli_run(host, "record", "follow", "generic", rec, "ANN@example.com").output
    posted = cli_run(host, "message", "post", "generic", rec, "--body", "Kick-off at 10",
                     "--subject", "Kick-off", "--partner", "bob@example.com")
    assert posted.exit_code == 0
    msg = json.loads(cli_run(host, "message", "show", last_word(posted), "--json").output)
    assert msg["subject"] == "Kick-off" and msg["envelope"] == "none"
    assert sorted(n["email"] for n in msg["notifications"]) == ["ann@example.com", "bob@example.com"]
    shown = json.loads(cli_run(host, "record", "show", "generic", rec, "--json").output)
    assert [f["partner_id"] for f in shown["followers"]] == [int(ann)]
    assert shown["messages"][0]["envelope"] == "none"
    table = cli_run(host, "record", "show", "generic", rec).output
    assert "Kick-off at 10" in table and "ENVELOPE" in table
    partners = json.loads(cli_run(host, "partner", "list", "--json").output)
    assert {p["email"]: p["message_bounce"] for p in partners} == {"Ann@Example.com": 0, "bob@example.com": 0}
    records = json.loads(cli_run(host, "record", "list", "--model", "generic", "--json").output)
    assert [r["name"] for r in records] == ["Website"]


def test_internal_note_from_the_cli(make_host, cli_run):
    host = make_host()
    cli_run(host, "partner", "add", "Ann", "ann@example.com")
    cli_run(host, "partner", "add", "Bob", "bob@example.com")
    rec = last_word(cli_run(host, "record", "create", "generic", "R"))
    cli_run(host, "record", "follow", "generic", rec, "ann@example.com")
    note = cli_run(host, "message", "post", "generic", rec, "--body", "x", "--note", "--partner", "bob@example.com")
    shown = json.loads(cli_run(host, "message", "show", last_word(note), "--json").output)
    assert [n["email"] for n in shown["notifications"]] == ["bob@example.com"] and shown["note"]


def test_partner_import_is_all_or_nothing_with_line_numbers(make_host, cli_run, tmp_path):
    host = make_host()
    bad = tmp_path / "bad.csv"
    bad.write_text("name,email\nAnn,ann@example.com\nBob,not-an-address\n,cid@example.com\n")
    err = one_line_error(cli_run(host, "partner", "import", str(bad)))
    assert "line 3" in err and "line 4" in err and "nothing imported" in err
    assert Partner.select().count() == 0
    good = tmp_path / "good.csv"
    good.write_text("\ufeffName,Email\nAnn,ann@example.com\n\"Smith, Bob\",bob@example.com\nAnn again,ANN@example.com\n")
    result = cli_run(host, "partner", "import", str(good))
    assert result.exit_code == 0 and "imported 2" in result.output
    assert sorted(p.name for p in Partner.select()) == ["Ann", "Smith, Bob"]
    missing = tmp_path / "missing.csv"
    missing.write_text("fullname,mail\nx,y@example.com\n")
    assert "name,email" in one_line_error(cli_run(host, "partner", "import", str(missing)))


@pytest.mark.parametrize("args, expected", [
    (("record", "show", "generic", "99"), "no generic record with id 99"),
    (("record", "show", "nosuch.model", "1"), "unknown record type 'nosuch.model'"),
    (("record", "create", "generic", "  "), "record name is empty"),
    (("partner", "add", "X", "bad@"), "not a valid email address"),
    (("partner", "add", "X", "a@example.com\r\nBcc: evil@example.com"), "header injection"),
    (("record", "follow", "generic", "1", "ghost@example.com"), "no generic record with id 1"),
    (("message", "show", "abc"), "message id must be a number"),
    (("message", "show", "42"), "no message with id 42"),
    (("plugins", "enable", "nope"), "unknown plugin 'nope'"),
    (("cron", "set-interval", "x", "4m"), "5-minute floor"),
])
def test_bad_input_gets_one_clear_line_and_a_non_zero_exit(make_host, cli_run, args, expected):
    host = make_host()
    assert expected in one_line_error(cli_run(host, *args))


def test_posting_to_an_unknown_partner_writes_nothing(make_host, cli_run):
    host = make_host()
    rec = last_word(cli_run(host, "record", "create", "generic", "R"))
    err = one_line_error(cli_run(host, "message", "post", "generic", rec, "--body", "x", "--partner", "ghost@example.com"))
    assert "no partner with email ghost@example.com" in err
    assert json.loads(cli_run(host, "record", "show", "generic", rec, "--json").output)["messages"] == []


def test_duplicate_partner_is_refused(make_host, cli_run):
    host = make_host()
    cli_run(host, "partner", "add", "Ann", "ann@example.com")
    assert "already exists" in one_line_error(cli_run(host, "partner", "add", "Ann 2", "ANN@example.com"))


def _invoke(args, env=None):
    return CliRunner().invoke(cli, args, env=env or {}, catch_exceptions=False)


def test_malformed_config_is_one_line(tmp_path):
    cfg = tmp_path / "postroom.cfg"
    cfg.write_text("this is not an ini file\n")
    result = _invoke(["--config", str(cfg), "partner", "list"])
    assert "malformed config file" in one_line_error(result)
    no_section = tmp_path / "other.cfg"
    no_section.write_text("[other]\na = 1\n")
    assert "no [postroom] section" in one_line_error(_invoke(["--config", str(no_section), "partner", "list"]))
    assert "config file not found" in one_line_error(_invoke(["--config", str(tmp_path / "nope.cfg"), "init"]))


def test_unsupported_database_url_is_one_line(tmp_path):
    cfg = tmp_path / "postroom.cfg"
    cfg.write_text(f"[postroom]\ndatabase = mysql://x/y\nlog_dir = {tmp_path}\n")
    assert "unsupported database URL" in one_line_error(_invoke(["--config", str(cfg), "init"]))


def test_unreachable_database_is_one_line_and_exit_75(tmp_path):
    cfg = tmp_path / "postroom.cfg"
    cfg.write_text(f"[postroom]\ndatabase = postgresql://postgres@127.0.0.1:1/nothing\nlog_dir = {tmp_path}\n")
    result = _invoke(["--config", str(cfg), "partner", "list"])
    assert "unavailable" in one_line_error(result)
    assert result.exit_code == 75


def test_the_console_script_runs_from_a_config_file(tmp_path):
    cfg = tmp_path / "postroom.cfg"
    cfg.write_text("[postroom]\ndatabase = sqlite:///data.db\nlog_dir = logs\n")
    env = dict(os.environ, POSTROOM_CONFIG=str(cfg), PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "postroom.cli", "init"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "data.db").exists()  # relative to the config file's folder
    assert "migrations applied for core" in (tmp_path / "logs" / "postroom.log").read_text()
