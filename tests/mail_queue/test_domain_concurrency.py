"""mail_domain_concurrency: at most N mails per recipient domain in flight (claimed and not
yet answered) across every worker, counted from the leased rows on both engines. The
end-to-end test with two worker processes is test_domain_concurrency_workers.py."""
import json

import pytest
from click.testing import CliRunner

from postroom.plugins.mail_queue import claims, sending
from postroom.plugins.mail_queue.models import OutgoingMail as M


def enqueue(host, addresses):
    host.service("mail").enqueue([{"email_to": a, "subject": "News", "body_html": "<p>Hi</p>",
                                   "bulk": True} for a in addresses])


def claimed(token) -> list[str]:
    return [m.email_to for m in M.select().where(M.lease_owner == token).order_by(M.id)]


def test_a_claim_takes_no_more_mails_of_a_domain_than_its_limit_leaves_beside_other_claims(mail_host, db_url):
    host = mail_host(db_url=db_url, mail_domain_concurrency="slow.example=2, *=3")
    enqueue(host, [f"s{i}@slow.example" for i in range(5)]
            + [f"a{i}@a.example" for i in range(5)] + ["x@Other.Example."])

    token, taken = claims.claim(host, "w1", 100)

    # The named limit for slow.example, `*` for each other domain (each its own count;
    # the domain is read as sending reads it: after the @, lower case, no trailing dot).
    assert claimed(token) == ["s0@slow.example", "s1@slow.example", "a0@a.example", "a1@a.example",
                              "a2@a.example", "x@Other.Example."]
    assert taken == 6
    # The slots are full: another claim (another worker's: the count is in the rows) gets
    # nothing of those domains...
    assert claims.claim(host, "w2", 100)[1] == 0
    # ...until an answer frees one (a sent mail stops counting, its row still leased).
    M.update(state="sent").where(M.email_to == "s0@slow.example").execute()
    token2, _ = claims.claim(host, "w2", 100)
    assert claimed(token2) == ["s2@slow.example"]


def test_a_dead_workers_expired_lease_does_not_hold_a_slot(mail_host, clock, db_url):
    host = mail_host(db_url=db_url, mail_domain_concurrency="slow.example=1", mail_lease_seconds=60)
    enqueue(host, ["s0@slow.example", "s1@slow.example"])
    assert claims.claim(host, "dead", 10)[1] == 1

    clock.advance(seconds=61)
    token, _ = claims.claim(host, "alive", 10)

    assert claimed(token) == ["s0@slow.example"]  # taken over; still one in flight


def test_without_a_limit_every_domain_is_claimed_at_once(mail_host, db_url):
    host = mail_host(db_url=db_url, mail_domain_concurrency="slow.example=1")
    enqueue(host, [f"a{i}@a.example" for i in range(4)])
    assert claims.claim(host, "w", 10)[1] == 4


def test_the_claim_statement_count_does_not_grow_with_the_queue(mail_host, db_url):
    host = mail_host(db_url=db_url, mail_domain_concurrency="slow.example=2, *=5")
    counts = []
    for n in (10, 400):
        M.delete().execute()
        enqueue(host, [f"u{i}@d{i % 37}.example" for i in range(n)] + [f"s{i}@slow.example" for i in range(n)])
        host.db.statements = 0
        _, taken = claims.claim(host, "w", 10_000)
        counts.append(host.db.statements)
        assert taken == min(n, 37 * 5) + 2
    assert counts[0] == counts[1]


def test_queue_list_and_show_say_why_a_held_back_mail_waits(mail_host, cli_run, db_url):
    host = mail_host(db_url=db_url, mail_domain_concurrency="slow.example=1")
    enqueue(host, ["s0@slow.example", "s1@slow.example", "a@a.example"])
    claims.claim(host, "busy-worker", 1)  # s0 in flight

    listed = {m["email_to"]: m for m in json.loads(
        cli_run(host, "queue", "list", "--state", "outgoing", "--json").output)}

    waits = ("waiting: 1 mail(s) to slow.example in flight, as many as mail_domain_concurrency "
             "allows (slow.example=1)")
    assert listed["s1@slow.example"]["failure_reason"] == waits
    assert listed["s0@slow.example"]["failure_reason"] is None  # the one in flight
    assert listed["a@a.example"]["failure_reason"] is None
    assert waits in cli_run(host, "queue", "list").output
    shown = json.loads(cli_run(host, "queue", "show", str(listed["s1@slow.example"]["id"]), "--json").output)
    assert shown["failure_reason"] == waits
    assert M.get(M.email_to == "s1@slow.example").failure_reason is None  # nothing written on it


def test_held_back_mails_are_not_remaining_work_and_the_queue_looks_again_soon(mail_host, db_url, sink):
    from postroom.core.models import CronTrigger
    host = mail_host(db_url=db_url, mail_domain_concurrency="slow.example=1")
    enqueue(host, ["s0@slow.example", "s1@slow.example", "a@a.example"])
    claims.claim(host, "other-worker", 1)  # another worker is sending s0
    CronTrigger.delete().execute()

    result = sending.process_queue(host)

    # a@ left; s1 waits for the slot. Counted as remaining it would make every idle worker
    # re-run the action in a loop; instead the action is asked again in a few seconds.
    assert [r.rcpt_tos for r in sink.received()] == [["a@a.example"]]
    assert result["sent"] == 1 and result["remaining"] == 0
    calls = [t.call_at for t in CronTrigger.select()]
    assert host.clock.now() + claims.RECHECK in calls


@pytest.mark.parametrize("setting", ["gmail.com=two", "gmail.com 2", "=5", "gmail.com=0", "gmail.com=2/s"])
def test_a_malformed_concurrency_is_one_line_and_exit_78(tmp_path, setting):
    from postroom.cli import cli
    path = tmp_path / "postroom.cfg"
    path.write_text(f"[postroom]\ndatabase = sqlite:///{tmp_path / 'p.db'}\nlog_dir = {tmp_path / 'logs'}\n"
                    f"mail_domain_concurrency = {setting}\n")

    result = CliRunner().invoke(cli, ["--config", str(path), "queue", "process"], catch_exceptions=False)

    assert result.exit_code == 78 and "Traceback" not in result.output
    [line] = result.stderr.strip().splitlines()
    assert "config key mail_domain_concurrency" in line and str(path) in line
    assert "not DOMAIN=N entries with N from 1 to 10000" in line


def test_the_database_reads_the_recipient_domain_as_sending_does(mail_host, db_url):
    from postroom.plugins.mail_queue.pacing import domain_of
    host = mail_host(db_url=db_url)
    addresses = ['"a@b"@Quoted.Example.', "plain@Y.example", "nobody", "x@[127.0.0.1]"]
    for address in addresses:
        M.create(email_to=address, message_id=f"<{len(address)}@example.com>",
                 created_at=host.clock.now())
    read = dict(M.select(M.email_to, claims.recipient_domain(host.db)).tuples())
    assert read == {a: domain_of(a) for a in addresses}
    assert read['"a@b"@Quoted.Example.'] == "quoted.example"


def test_send_now_keeps_to_the_limit_and_says_why_a_mail_stayed(mail_host, cli_run, db_url, sink, clock):
    host = mail_host(db_url=db_url, mail_domain_concurrency="slow.example=1")
    enqueue(host, ["s0@slow.example", "s1@slow.example"])
    claims.claim(host, "busy-worker", 1)  # s0 in flight
    held = M.get(M.email_to == "s1@slow.example")
    M.update(next_attempt_at=clock.now().replace(hour=23)).where(M.id == held.id).execute()

    result = cli_run(host, "queue", "send-now", str(held.id))

    assert result.exit_code == 1 and sink.received() == []
    assert result.output.strip() == (f"mail {held.id}: outgoing (waiting: 1 mail(s) to slow.example in flight, "
                                     f"as many as mail_domain_concurrency allows (slow.example=1))")
