"""Inputs that used to end as "unexpected error" (exit 70) get one clear line instead,
through the real CLI and a real config file."""
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from postroom.cli import cli
from tests.core.test_config import ROOT, one_line, run, write_config


@pytest.fixture
def deployment(tmp_path):
    path = write_config(tmp_path)
    assert run(path, "init").exit_code == 0
    assert run(path, "plugins", "enable", "mail_queue").exit_code == 0
    return path


def clear(result, *words):
    assert result.exit_code not in (0, 70), result.output
    line = one_line(result)
    assert "unexpected error" not in line and all(w in line for w in words), line
    return line


def test_a_csv_field_over_128_kb_is_one_line(deployment, tmp_path):
    big = tmp_path / "big.csv"
    big.write_text("name,email\n" + "x" * 140_000 + ",a@example.com\n")
    clear(run(deployment, "partner", "import", str(big)), "field larger than field limit", "nothing was imported")


@pytest.mark.parametrize("args", [["record", "show", "generic", "12345678901234567890"],
                                  ["message", "show", "12345678901234567890"],
                                  ["queue", "show", "12345678901234567890"]])
def test_an_id_with_20_digits_is_one_line(deployment, args):
    clear(run(deployment, *args), "is out of range")


def test_an_interval_of_99999999999999999_days_is_one_line(deployment):
    clear(run(deployment, "cron", "set-interval", "Mail: Email Queue Manager", "99999999999999999d"),
          "too long", "3660d")


def test_a_port_out_of_range_is_one_line(deployment):
    clear(run(deployment, "server", "add", "relay", "--host", "h", "--port", "99999999999999999999"), "out of range")
    clear(run(write_config(deployment.parent, smtp_port="99999"), "server", "test"), "smtp_port")


def test_a_file_that_is_not_an_sqlite_database_is_one_line(tmp_path):
    (tmp_path / "notes.db").write_text("these are my notes, not a database\n" * 100)
    path = write_config(tmp_path, database=f"sqlite:///{tmp_path / 'notes.db'}")
    clear(run(path, "partner", "list"), "file is not a database", "database")


@pytest.mark.parametrize("kind", ["a file", "cannot be created"])
def test_a_log_dir_that_cannot_be_used_is_one_line_that_does_not_point_at_the_log(tmp_path, kind):
    (tmp_path / "afile").write_text("x")
    log_dir = tmp_path / "afile" if kind == "a file" else tmp_path / "afile" / "logs"
    path = write_config(tmp_path, log_dir=str(log_dir))
    out = subprocess.run([sys.executable, "-m", "postroom.cli", "--config", str(path), "init"], capture_output=True,
                         text=True, timeout=60, env={"PYTHONPATH": ROOT, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 78
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]  # one line, no traceback at exit
    assert f"cannot write logs to log_dir {log_dir}" in out.stderr and "postroom.log" not in out.stderr


def test_serve_role_inbound_on_a_busy_port_says_cannot_listen(deployment, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = write_config(tmp_path, inbound_port=str(port))
        assert run(path, "plugins", "enable", "inbound").exit_code == 0
        result = CliRunner().invoke(cli, ["--config", str(path), "serve", "--role", "inbound"], catch_exceptions=False)
    clear(result, f"cannot listen on 127.0.0.1:{port}", "address already in use")
