"""A mail's id names that mail for ever: after the newest mail is deleted (auto-deleted once
sent, or removed by the auto-vacuum), the next mail gets a new id, so `zgrep 'mail 5 '`
follows one mail. On both engines, through the real CLI."""
import re

import pytest

from .conftest import mails

pytestmark = pytest.mark.parametrize("smtp_mode", ["plain"], indirect=True)


def sent_id(result) -> int:
    assert result.exit_code == 0, result.output
    return int(result.output.split()[-1])


def log_lines_about(tmp_path, mail_id) -> list[str]:
    text = (tmp_path / "logs" / "postroom.log").read_text()
    return [line for line in text.splitlines() if re.search(rf"\bmail {mail_id}\b", line)]


def test_an_auto_deleted_mails_id_is_never_given_to_the_next_mail(mail_host, sink, cli_run, db_url, tmp_path):
    host = mail_host(db_url=db_url)
    first = sent_id(cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "One",
                            "--body", "b", "--auto-delete"))
    assert len(sink.wait_for(1)) == 1 and mails() == []  # sent, then deleted: the table is empty
    second = sent_id(cli_run(host, "mail", "send", "--to", "bob@example.org", "--subject", "Two",
                             "--body", "b", "--auto-delete"))
    assert len(sink.wait_for(2)) == 2 and mails() == []
    third = sent_id(cli_run(host, "mail", "send", "--to", "cy@example.org", "--subject", "Three",
                            "--body", "b"))
    assert first < second < third
    for mail_id, address in ((first, "ann@"), (second, "bob@"), (third, "cy@")):
        lines = log_lines_about(tmp_path, mail_id)
        assert lines and all(address in line or "msgid=" in line for line in lines), lines
        assert not any(other in line for line in lines
                       for other in {"ann@", "bob@", "cy@"} - {address}), lines


def test_a_mail_removed_by_the_auto_vacuum_leaves_its_id_unused(mail_host, sink, cli_run, db_url, clock):
    host = mail_host(db_url=db_url, plugins=("mail_queue", "auto_vacuum"))
    kept = sent_id(cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "Kept",
                           "--body", "b"))
    assert len(sink.wait_for(1)) == 1 and [m.id for m in mails(state="sent")] == [kept]
    clock.advance(days=31)  # past mail_keep_sent_days
    result = cli_run(host, "vacuum")
    assert result.exit_code == 0, result.output
    assert mails() == []
    after = sent_id(cli_run(host, "mail", "send", "--to", "bob@example.org", "--subject", "New",
                            "--body", "b"))
    assert after > kept
    assert [m.email_to for m in mails()] == ["bob@example.org"]
