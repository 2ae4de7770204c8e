"""The helpdesk plugin's own tests, written with Postroom's pytest plugin (`postroom.testing`,
loaded automatically once Postroom is installed): each test gets a fresh deployment with
the plugins of its `postroom_plugins` marker enabled, a recording SMTP server on loopback
and a clock it moves by hand. Run them with `pytest tests/` after `pip install -e .`.
"""
import json

import pytest

import postroom

pytestmark = pytest.mark.postroom_plugins("helpdesk", "mail_queue")


def test_new_tickets_are_numbered_in_order_and_other_records_are_not(postroom_host):
    first = postroom.create_record(postroom_host, "helpdesk.ticket", "Printer on fire")
    other = postroom.create_record(postroom_host, "generic", "Not a ticket")
    second = postroom.create_record(postroom_host, "helpdesk.ticket", "VPN drops")
    assert [first.values["number"], second.values["number"]] == ["HD-00001", "HD-00002"]
    assert other.values is None


def test_a_comment_on_a_ticket_mails_its_followers(postroom_host, postroom_smtp):
    ticket = postroom.create_record(postroom_host, "helpdesk.ticket", "Printer on fire")
    postroom.create_partner(postroom_host, "Ann", "ann@example.org")
    postroom.follow(postroom_host, ticket, "ann@example.org")
    postroom.post_message(postroom_host, ticket, "A technician is on the way", subject="HD-00001")
    [mail] = postroom_smtp.wait_for(1)
    assert mail.rcpt_tos == ["ann@example.org"]
    assert mail.message["Subject"] == "HD-00001"


def test_the_tickets_command_lists_number_name_and_messages(postroom_host, postroom_cli, postroom_clock):
    ticket = postroom.create_record(postroom_host, "helpdesk.ticket", "Printer on fire")
    postroom_clock.advance(hours=1)
    postroom.post_message(postroom_host, ticket, "It smokes")
    result = postroom_cli("helpdesk", "tickets", "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert (row["number"], row["name"], row["messages"]) == ("HD-00001", "Printer on fire", 1)
    assert row["created_at"].startswith("2026-01-05T09:00")  # the fixture clock's start


def test_without_the_plugin_enabled_there_is_no_ticket_type(postroom_make_host):
    host = postroom_make_host(plugins=["mail_queue"])
    with pytest.raises(postroom.NotFound, match="unknown record type 'helpdesk.ticket'"):
        postroom.create_record(host, "helpdesk.ticket", "Printer on fire")
