"""Fixtures for the mail_marketing tests: a host with the real mail_queue plugin sending to
a real SMTP sink on loopback, and small helpers that go through the real CLI."""
import pytest

from postroom.core import scheduler
from tests.support.smtp import SMTPSink, smtp_sink  # noqa: F401 - re-exported fixture


@pytest.fixture
def sink():
    with SMTPSink() as server:
        yield server


@pytest.fixture
def mk(make_host, sink):
    """mk(db_url=None, extra=(), **config) → a host with mail_marketing (and so mail_queue)
    enabled, mailing through `sink`."""
    def factory(db_url=None, extra=(), **config):
        values = {"smtp_host": sink.host, "smtp_port": sink.port, "smtp_timeout": "5",
                  "daily_limit": "1000000"}
        values.update({k: str(v) for k, v in config.items()})
        return make_host(plugins=["mail_marketing"], db_url=db_url, config=values, extra=extra)
    return factory


@pytest.fixture
def run(cli_run):
    """run(host, *args) → Result; fails the test on a non-zero exit unless expect_fail."""
    def invoke(host, *args, expect_fail=False):
        result = cli_run(host, *args)
        if expect_fail:
            assert result.exit_code != 0, result.output
        else:
            assert result.exit_code == 0, result.output
        return result
    return invoke


def last_word(result) -> str:
    return result.output.strip().split()[-1]


def write_csv(tmp_path, name, rows, header="email,name") -> str:
    path = tmp_path / name
    path.write_text("\n".join([header] + rows) + "\n", encoding="utf-8")
    return str(path)


def contacts(n, start=0, domain="example.org"):
    return [f"user{i}@{domain},User {i}" for i in range(start, start + n)]


def make_list(run, host, tmp_path, name, rows):
    run(host, "list", "create", name)
    run(host, "list", "import", name, write_csv(tmp_path, f"{name}.csv", rows))


def make_campaign(run, host, tmp_path, *lists, subject="News", body="<p>Hello <b>there</b></p>"):
    body_file = tmp_path / f"body-{subject.replace(' ', '_')}.html"
    body_file.write_text(body, encoding="utf-8")
    args = ["campaign", "create", "--subject", subject, "--body-file", str(body_file)]
    for name in lists:
        args += ["--list", name]
    return int(last_word(run(host, *args)))


def drain(host):
    """Run every due scheduled action (process queue, mail queue) until nothing is due."""
    return scheduler.run_due(host, limit=1000)


def show(run, host, campaign_id) -> dict:
    import json
    return json.loads(run(host, "campaign", "show", campaign_id, "--json").output)
