"""The sender of mail that opened a record through an alias follows it, so replies reach them."""
from postroom.core import chatter, records
from postroom.core.models import Follower, Record
from postroom.plugins.inbound import aliases

from .conftest import message, transaction


def test_the_known_sender_who_opened_a_record_follows_it_and_hears_the_answer(inbound_host, gateway, db_url):
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "support", "generic")
    ann = records.create_partner(host, "Ann", "ann@client.test")
    code, _ = transaction(gateway(host), "ann@client.test", ["support@example.com"],
                          message(subject="Printer on fire"))[1]
    assert code == 250
    ticket = Record.get(Record.name == "Printer on fire")
    assert [f.partner_id for f in Follower.select().where(Follower.record == ticket)] == [ann.id]
    answer = chatter.post_message(host, ticket, "On our way")
    assert [r["email"] for r in chatter.notification_rows(answer)] == ["ann@client.test"]


def test_a_stranger_who_opens_a_record_becomes_a_following_partner(inbound_host, gateway):
    host = inbound_host()
    aliases.add_alias(host, "support", "generic")
    code, _ = transaction(gateway(host), "zoe@client.test", ["support@example.com"],
                          message(subject="Broken link", sender="Zoe Stranger <zoe@client.test>"))[1]
    assert code == 250
    ticket = Record.get(Record.name == "Broken link")
    zoe = records.find_partner(host, "zoe@client.test")
    assert zoe.name == "Zoe Stranger"
    assert [f.partner_id for f in Follower.select().where(Follower.record == ticket)] == [zoe.id]
