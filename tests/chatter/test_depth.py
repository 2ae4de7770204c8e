"""Chatter depth, as in Odoo: subtypes followers subscribe to, auto-follow of the author,
tracked values posted old → new, mentions, unfollow; through the real CLI, both engines."""
import json

import pytest

import postroom
from postroom.core import chatter, records
from postroom.core.models import Follower, Message
from postroom.core.plugins import PluginInfo, hookimpl


class Sales:
    """A plugin with a record type that tracks its stage and amount, and a subtype."""
    PLUGIN = PluginInfo("sales", "Sale orders")

    @hookimpl
    def postroom_record_types(self, register):
        register(postroom.RecordType("sale.order", "Sale order", tracked=("stage", "amount")))

    @hookimpl
    def postroom_message_subtypes(self, register):
        register(postroom.Subtype("invoice_paid", "Invoice paid", default=False))


@pytest.fixture
def host(make_host, db_url):
    return make_host(db_url=db_url, extra=[Sales()], plugins=["sales"])


def notified(message):
    return sorted(r["email"] for r in chatter.notification_rows(message))


def test_followers_get_only_the_subtypes_they_subscribed_to(host, cli_run):
    order = records.create_record(host, "sale.order", "Order 42")
    for name in ("ann", "bob", "cid"):
        records.create_partner(host, name.title(), f"{name}@example.org")
    assert cli_run(host, "record", "follow", "sale.order", order.id, "ann@example.org").exit_code == 0
    assert cli_run(host, "record", "follow", "sale.order", order.id, "bob@example.org",
                   "--subtypes", "invoice_paid").exit_code == 0
    assert cli_run(host, "record", "follow", "sale.order", order.id, "cid@example.org",
                   "--subtypes", "discussion,invoice_paid").exit_code == 0
    talk = chatter.post_message(host, order, "When does it ship?")
    paid = chatter.post_message(host, order, "Invoice paid", subtype="invoice_paid")
    assert notified(talk) == ["ann@example.org", "cid@example.org"]
    assert notified(paid) == ["bob@example.org", "cid@example.org"]  # not a default: ann chose none
    listing = json.loads(cli_run(host, "record", "subtypes", "--json").output)
    assert {"name": "invoice_paid", "label": "Invoice paid", "default": False} in listing
    bad = cli_run(host, "record", "follow", "sale.order", order.id, "ann@example.org", "--subtypes", "gossip")
    assert bad.exit_code != 0 and "unknown subtype 'gossip'" in bad.stderr


def test_a_post_with_a_subtype_stays_one_statement_set_whatever_the_followers(host):
    small = records.create_record(host, "sale.order", "Small")
    large = records.create_record(host, "sale.order", "Large")
    people = [records.create_partner(host, f"P{i}", f"p{i}@example.org") for i in range(60)]
    records.follow(host, small, people[0], ["invoice_paid"])
    for i, p in enumerate(people):
        records.follow(host, large, p, ["invoice_paid"] if i % 2 else None)

    def cost(record):
        before = host.statements()
        chatter.post_message(host, record, "paid", subtype="invoice_paid")
        return host.statements() - before
    assert cost(small) == cost(large)


def test_the_author_follows_the_record_after_posting(host):
    order = records.create_record(host, "sale.order", "Order 7")
    ann = records.create_partner(host, "Ann", "ann@example.org")
    bob = records.create_partner(host, "Bob", "bob@example.org")
    chatter.post_message(host, order, "I'll take it", author=ann)
    reply = chatter.post_message(host, order, "Great", author=bob)
    assert notified(reply) == ["ann@example.org"]
    assert {f.partner_id for f in Follower.select().where(Follower.record == order)} == {ann.id, bob.id}


def test_update_record_posts_tracked_changes_old_to_new_to_tracking_followers(host, cli_run):
    order = records.create_record(host, "sale.order", "Order 9", {"stage": "draft"})
    ann = records.create_partner(host, "Ann", "ann@example.org")
    bob = records.create_partner(host, "Bob", "bob@example.org")
    records.follow(host, order, ann)
    records.follow(host, order, bob, ["discussion"])
    result = cli_run(host, "record", "update", "sale.order", order.id, "stage=confirmed", "amount=120",
                     "note=internal")
    assert result.exit_code == 0 and "tracked changes posted" in result.output
    [entry] = [m for m in chatter.chatter(order) if m.subtype == "tracking"]
    assert "stage: draft → confirmed" in entry.body and "amount: (empty) → 120" in entry.body
    assert "note" not in entry.body  # not tracked
    assert notified(entry) == ["ann@example.org"]
    assert records.get_record(host, "sale.order", order.id).values == {
        "stage": "confirmed", "amount": "120", "note": "internal"}
    assert postroom.update_record(host, order, {"stage": "confirmed"}) is None  # nothing changed
    assert Message.select().where(Message.subtype == "tracking").count() == 1


def test_a_mention_notifies_that_partner_once(host):
    order = records.create_record(host, "sale.order", "Order 3")
    ann = records.create_partner(host, "Ann", "ann@example.org")
    records.create_partner(host, "Bob", "bob@example.org")
    records.follow(host, order, ann)
    msg = chatter.post_message(host, order, "@ann@example.org and @bob@example.org, see this; "
                                            "again @bob@example.org. Not mail@example.org.")
    assert notified(msg) == ["ann@example.org", "bob@example.org"]
    note = chatter.post_message(host, order, "@bob@example.org internal", note=True)
    assert notified(note) == ["bob@example.org"]


def test_unfollow_stops_notifications(host, cli_run):
    order = records.create_record(host, "sale.order", "Order 5")
    records.create_partner(host, "Ann", "ann@example.org")
    cli_run(host, "record", "follow", "sale.order", order.id, "ann@example.org")
    assert cli_run(host, "record", "unfollow", "sale.order", order.id, "ann@example.org").exit_code == 0
    assert notified(chatter.post_message(host, order, "anyone?")) == []
