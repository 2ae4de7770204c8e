"""Pacing per destination domain and back-off of a domain that answers 421 / 4.7.x, against
a real SMTP sink on loopback that throttles one domain only."""
import json

import pytest

from postroom.plugins.mail_queue import sending

SLOW_DOWN = "421 4.7.0 Too many messages from you, slow down"


def enqueue(host, addresses):
    host.service("mail").enqueue([{"email_to": a, "subject": "News", "body_html": "<p>Hi</p>",
                                   "bulk": True} for a in addresses])


def waiting(cli_run, host) -> list[dict]:
    result = cli_run(host, "queue", "list", "--state", "outgoing", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def arrived(sink, domain) -> list[str]:
    return sorted(r.rcpt_tos[0] for r in sink.received() if r.rcpt_tos[0].endswith("@" + domain))


def test_a_throttling_domain_is_backed_off_while_the_others_keep_flowing(
        mail_host, smtp_sink, cli_run, clock, db_url):
    sink = smtp_sink(domain_replies={"throttled.example": SLOW_DOWN})
    host = mail_host(db_url=db_url, smtp_port=sink.port)
    enqueue(host, [f"{name}{i}@{domain}" for i in range(6) for name, domain in
                   (("t", "throttled.example"), ("f", "fine.example"))])

    sending.process_queue(host)

    # Every mail of the other domain left in this same run, each on its first attempt...
    assert arrived(sink, "fine.example") == [f"f{i}@fine.example" for i in range(6)]
    # ...and the throttled domain was asked once, then left alone.
    assert sink.refused == ["t0@throttled.example"]
    held = waiting(cli_run, host)
    assert sorted(m["email_to"] for m in held) == [f"t{i}@throttled.example" for i in range(6)]
    for mail in held:
        assert mail["failure_reason"].startswith("waiting: throttled.example asked to slow down")
        assert "421 4.7.0 Too many messages from you" in mail["failure_reason"]
        assert "back-off 60 s" in mail["failure_reason"]
        assert mail["next_attempt_at"].startswith("2026-01-05T09:01:00")
    assert {m["email_to"]: m["attempts"] for m in held}["t1@throttled.example"] == 0
    assert "waiting: throttled.example asked to slow down" in cli_run(host, "queue", "list").output

    # Mail for another domain enqueued meanwhile is not held up.
    enqueue(host, ["late@fine.example"])
    sending.process_queue(host)
    assert "late@fine.example" in arrived(sink, "fine.example")
    assert sink.refused == ["t0@throttled.example"]

    # Still throttling when the back-off ends: the next delay is longer.
    clock.advance(seconds=61)
    sending.process_queue(host)
    assert sink.refused == ["t0@throttled.example", "t0@throttled.example"]
    assert all("back-off 120 s" in m["failure_reason"] for m in waiting(cli_run, host))

    # It recovers: once the back-off ends, all its mails arrive, once each.
    sink.domain_replies.clear()
    clock.advance(seconds=121)
    sending.process_queue(host)
    assert arrived(sink, "throttled.example") == [f"t{i}@throttled.example" for i in range(6)]
    assert waiting(cli_run, host) == []


def test_a_4_7_x_reply_at_data_also_backs_the_domain_off(mail_host, smtp_sink, cli_run):
    sink = smtp_sink(data_reply="451 4.7.1 Rate limit exceeded, try again later")
    host = mail_host(smtp_port=sink.port)
    enqueue(host, ["a@busy.example", "b@busy.example"])

    sending.process_queue(host)

    held = waiting(cli_run, host)
    assert len(held) == 2 and sink.attempts == 1
    assert all("busy.example asked to slow down" in m["failure_reason"] for m in held)


def test_a_421_to_the_whole_transaction_without_4_7_x_is_not_a_back_off(mail_host, smtp_sink, cli_run):
    sink = smtp_sink(data_reply="421 4.3.2 Service shutting down, closing channel")
    host = mail_host(smtp_port=sink.port)
    enqueue(host, ["a@down.example", "b@down.example"])

    sending.process_queue(host)

    assert sink.attempts == 2  # both tried (a new connection after the 421), neither deferred
    held = waiting(cli_run, host)
    assert all(m["attempts"] == 1 and "421 4.3.2" in m["failure_reason"]
               and "slow down" not in m["failure_reason"] for m in held)


def test_other_temporary_failures_are_not_a_back_off(mail_host, smtp_sink, cli_run):
    sink = smtp_sink(rcpt_replies={"a@example.net": "450 4.2.0 Mailbox busy"})
    host = mail_host(smtp_port=sink.port)
    enqueue(host, ["a@example.net", "b@example.net"])

    sending.process_queue(host)

    assert arrived(sink, "example.net") == ["b@example.net"]
    [held] = waiting(cli_run, host)
    assert "450 4.2.0 Mailbox busy" in held["failure_reason"] and "slow down" not in held["failure_reason"]


def test_mail_domain_rate_caps_each_domain_per_window(mail_host, smtp_sink, cli_run, clock, db_url):
    sink = smtp_sink()
    host = mail_host(db_url=db_url, smtp_port=sink.port, mail_domain_rate="paced.example=1/s, *=1000/s",
                     mail_domain_window_seconds=5)
    enqueue(host, [f"p{i:02d}@paced.example" for i in range(12)] + [f"o{i}@other.example" for i in range(3)])

    sending.process_queue(host)

    assert len(arrived(sink, "paced.example")) == 5  # 1/s over a 5-second window
    assert len(arrived(sink, "other.example")) == 3
    held = waiting(cli_run, host)
    assert len(held) == 7
    assert all(m["failure_reason"].startswith("waiting: pacing paced.example=1/s (mail_domain_rate)")
               for m in held)
    clock.advance(seconds=5)
    sending.process_queue(host)
    assert len(arrived(sink, "paced.example")) == 10
    clock.advance(seconds=5)
    sending.process_queue(host)
    assert arrived(sink, "paced.example") == [f"p{i:02d}@paced.example" for i in range(12)]
    assert all(r.rcpt_tos[0] for r in sink.received())
    assert len(sink.received()) == 15  # nobody twice


def test_the_window_count_is_shared_by_every_worker_of_the_deployment(mail_host, smtp_sink, make_host):
    sink = smtp_sink()
    config = {"smtp_port": sink.port, "mail_domain_rate": "paced.example=2/s", "mail_domain_window_seconds": 2}
    first = mail_host(**config)
    enqueue(first, [f"p{i}@paced.example" for i in range(4)])
    sending.process_queue(first)
    assert len(arrived(sink, "paced.example")) == 4  # 2/s x 2 s

    enqueue(first, [f"q{i}@paced.example" for i in range(4)])
    second = mail_host(**config)  # another worker, same database, same window
    sending.process_queue(second)

    assert len(arrived(sink, "paced.example")) == 4


@pytest.mark.parametrize("setting", ["gmail.com=fast", "gmail.com 20/s", "=5/s", "gmail.com=0/s"])
def test_a_malformed_rate_is_one_line_and_exit_78(tmp_path, setting):
    from click.testing import CliRunner
    from postroom.cli import cli
    path = tmp_path / "postroom.cfg"
    path.write_text(f"[postroom]\ndatabase = sqlite:///{tmp_path / 'p.db'}\nlog_dir = {tmp_path / 'logs'}\n"
                    f"mail_domain_rate = {setting}\n")

    result = CliRunner().invoke(cli, ["--config", str(path), "queue", "process"], catch_exceptions=False)

    assert result.exit_code == 78 and "Traceback" not in result.output
    [line] = result.stderr.strip().splitlines()
    assert "config key mail_domain_rate" in line and "not DOMAIN=N/s, N/m or N/h entries" in line
