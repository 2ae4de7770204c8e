"""The typed configuration: every key checked at start by any command (exit 78 naming the key,
the file and what is allowed), unknown keys warned about with the closest known one,
`postroom config check`, and config errors that no longer hide plugin commands.
All through a real config file and the real CLI."""
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from postroom.cli import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_config(tmp_path, **keys):
    values = {"database": f"sqlite:///{tmp_path / 'postroom.db'}", "log_dir": str(tmp_path / "logs"),
              "domains": "example.com"}
    values.update(keys)
    path = tmp_path / "postroom.cfg"
    path.write_text("[postroom]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
    return path


def run(path, *args):
    return CliRunner().invoke(cli, ["--config", str(path), *args], catch_exceptions=False)


def one_line(result):
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("key, value, allowed", [
    ("daily_limit", "abc", "a whole number from 0 to"),
    ("daily_limit", "-5", "a whole number from 0 to"),
    ("mail_batch_size", "0", "a whole number from 1 to"),
    ("inbound_timeout", "0", "a number from 0.1 to"),
    ("inbound_max_size", "-1", "a whole number from 1 to"),
    ("inbound_port", "99999", "a whole number from 1 to 65535"),
    ("domains", "", "one or more domain names"),
    ("domains", "example.com, not a domain!", "one or more domain names"),
    ("mail_from", "Boss <b@example.com>, victim@x.test", "one email address"),
    ("smtp_encryption", "tls", "one of none, starttls, ssl"),
    ("smtp_encryption", "ssl-tls", "one of none, starttls, ssl"),
    ("cron_time_budget", "nan", "a number from 0 to 86400"),
    ("catchall", "a@b", "a local part (no @)"),
])
def test_a_bad_value_is_one_line_naming_key_file_and_allowed_values_exit_78(tmp_path, key, value, allowed):
    path = write_config(tmp_path, **{key: value})
    result = run(path, "partner", "list")
    assert result.exit_code == 78
    line = one_line(result)
    assert f"config key {key} in {path}" in line and "allowed:" in line and allowed in line, line
    assert not (tmp_path / "postroom.db").exists()  # before anything runs


def test_a_plugin_command_with_a_bad_config_says_the_config_error_not_no_such_command(tmp_path):
    path = write_config(tmp_path, daily_limit="-5")
    result = run(path, "mail", "send", "--to", "a@example.org", "--subject", "S", "--body", "B")
    assert result.exit_code == 78
    assert "config key daily_limit" in one_line(result) and "No such command" not in result.output


def test_smtp_encryption_is_read_case_insensitively(tmp_path):
    path = write_config(tmp_path, smtp_encryption="StartTLS")
    rows = {r["key"]: r for r in json.loads(run(path, "config", "check", "--json").stdout)["keys"]}
    assert rows["smtp_encryption"]["value"] == "starttls" and rows["smtp_encryption"]["source"] == "file"


def test_a_control_character_in_a_config_value_is_refused(tmp_path):
    path = tmp_path / "postroom.cfg"
    # An INI continuation line puts a line break inside the value.
    path.write_text(f"[postroom]\ndatabase = sqlite:///{tmp_path / 'p.db'}\nlog_dir = {tmp_path}\n"
                    f"smtp_host = relay.example.com\n  RCPT TO:<x@evil.test>\n")
    result = run(path, "config", "check")
    assert result.exit_code == 78
    assert "smtp_host" in one_line(result) and "control characters" in one_line(result)


def test_an_unknown_key_warns_on_every_command_and_in_doctor_with_the_closest_key(tmp_path):
    path = write_config(tmp_path, smtp_prot="2525")
    assert run(path, "init").exit_code == 0
    listed = run(path, "partner", "list")
    assert listed.exit_code == 0
    assert "warning: unknown config key 'smtp_prot'" in listed.stderr and "'smtp_port'" in listed.stderr
    doctor = json.loads(run(path, "doctor", "--json").stdout)
    [finding] = [c for c in doctor["checks"] if c["name"] == "config"]
    assert finding["status"] == "warn" and "smtp_prot" in finding["finding"] and "smtp_port" in finding["remedy"]


def test_config_check_prints_each_value_with_its_source_and_masks_secrets(tmp_path):
    path = write_config(tmp_path, database="postgresql://app:hunter2@db.example.com/mail", daily_limit="1000")
    result = run(path, "config", "check")
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines()[2:] if line.strip()}
    assert lines["database"][1:3] == ["postgresql://app:***@db.example.com/mail", "file"]
    assert lines["daily_limit"][1:4] == ["1000", "file", "mail_queue"]
    assert lines["smtp_port"][1:3] == ["25", "default"]
    assert lines["inbound_max_size"][2] == "default"


def test_config_check_reports_a_bad_value_like_every_command(tmp_path):
    result = run(write_config(tmp_path, inbound_port="99999"), "config", "check")
    assert result.exit_code == 78 and "inbound_port" in one_line(result)


def test_the_console_script_exits_78_on_a_bad_key(tmp_path):
    path = write_config(tmp_path, mail_batch_size="0")
    out = subprocess.run([sys.executable, "-m", "postroom.cli", "--config", str(path), "cron", "list"],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 78
    assert out.stderr.strip().startswith("Error: config key mail_batch_size in") and "Traceback" not in out.stderr


def test_the_readme_states_every_key_with_its_limits_and_default():
    from postroom.core import plugins
    from postroom.core.config import Config
    from postroom.core.host import declare_plugin_keys
    config = Config({})
    declare_plugin_keys(config, plugins.discover())
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    missing = [name for name, key in config.keys.items()
               if f"| `{name}` | {config.owner[name]} | {key.allowed()} |" not in readme]
    assert not missing, f"README's Configuration table lacks (or has stale limits for): {missing}"


@pytest.mark.parametrize("command", [["partner", "list"], ["doctor"], ["serve"],
                                     ["mail", "send", "--to", "a@example.org", "--subject", "S", "--body", "B"]])
def test_only_init_creates_the_database(tmp_path, command):
    path = write_config(tmp_path, database=f"sqlite:///{tmp_path / 'typo' / 'postroom.db'}")
    result = run(path, *command)
    assert result.exit_code == 78
    assert one_line(result) == (f"Error: no database at {tmp_path / 'typo' / 'postroom.db'}: run postroom init "
                                f"(or fix `database` in {path})")
    assert not (tmp_path / "typo").exists()
    assert run(path, "init").exit_code == 0
    assert (tmp_path / "typo" / "postroom.db").exists()
    assert run(path, "partner", "list").exit_code == 0
