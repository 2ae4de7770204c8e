"""Who a post notifies, and how: the recipient rules of DESIGN.md, on both engines."""
import pytest

from postroom.core import chatter, records
from postroom.core.models import Follower, Notification, Partner
from tests.core.plugin_fixtures import EmailChannel


@pytest.fixture
def setup(make_host, db_url, recorder):
    host = make_host(db_url=db_url, extra=[recorder])
    rec = records.create_record(host, "generic", "Deal")
    people = {n: records.create_partner(host, n.title(), f"{n}@example.com") for n in
              ("ann", "bob", "cid", "dan")}
    for n in ("ann", "bob", "cid"):
        records.follow(host, rec, people[n])
    return host, rec, people


def recipients(message):
    return sorted(r["email"] for r in chatter.notification_rows(message))


def test_comment_notifies_followers_and_named_partners_but_not_the_author(setup):
    host, rec, p = setup
    msg = chatter.post_message(host, rec, "hi", author=p["ann"], partner_ids=[p["dan"].id])
    assert recipients(msg) == ["bob@example.com", "cid@example.com", "dan@example.com"]


def test_named_partner_who_also_follows_is_notified_once(setup):
    host, rec, p = setup
    msg = chatter.post_message(host, rec, "hi", partner_ids=[p["bob"].id, p["bob"].id])
    assert recipients(msg) == ["ann@example.com", "bob@example.com", "cid@example.com"]


def test_inactive_partner_is_never_notified(setup):
    host, rec, p = setup
    Partner.update(active=False).where(Partner.id == p["cid"].id).execute()
    msg = chatter.post_message(host, rec, "hi", partner_ids=[p["cid"].id])
    assert "cid@example.com" not in recipients(msg)


def test_internal_note_notifies_only_named_partners(setup):
    host, rec, p = setup
    msg = chatter.post_message(host, rec, "internal", note=True, partner_ids=[p["dan"].id], author=p["ann"])
    assert recipients(msg) == ["dan@example.com"]
    silent = chatter.post_message(host, rec, "nobody", note=True)
    assert recipients(silent) == []


def test_without_mail_plugin_notifications_stay_in_app(setup):
    host, rec, p = setup
    msg = chatter.post_message(host, rec, "hi")
    rows = chatter.notification_rows(msg)
    assert {r["channel"] for r in rows} == {"inbox"} and {r["status"] for r in rows} == {"sent"}
    assert chatter.envelope(msg) == "none"


def test_with_an_email_channel_email_partners_get_ready_email_notifications(make_host, db_url):
    host = make_host(db_url=db_url, available={"email_fx": EmailChannel()}, plugins=["email_fx"])
    rec = records.create_record(host, "generic", "Deal")
    ann = records.create_partner(host, "Ann", "ann@example.com")
    bob = records.create_partner(host, "Bob", "bob@example.com", inbox=True)
    records.follow(host, rec, ann)
    records.follow(host, rec, bob)
    msg = chatter.post_message(host, rec, "hi")
    by_email = {r["email"]: (r["channel"], r["status"]) for r in chatter.notification_rows(msg)}
    assert by_email == {"ann@example.com": ("email", "ready"), "bob@example.com": ("inbox", "sent")}


def test_posting_fires_the_message_posted_hook_with_the_recipient_count(setup, recorder):
    host, rec, p = setup
    msg = chatter.post_message(host, rec, "hi", author=p["ann"])
    assert recorder.named("postroom_message_posted") == [{"message_id": msg.id, "notified": 2}]


def test_body_is_kept_safe(setup):
    host, rec, _ = setup
    plain = chatter.post_message(host, rec, "<script>alert(1)</script>")
    assert "<script>" not in plain.body and "&lt;script&gt;" in plain.body
    html = chatter.post_message(host, rec, '<p onclick="x()">ok<script>bad()</script></p>', body_is_html=True)
    assert html.body == "<p>ok</p>"


def test_message_ids_are_unique_and_carry_the_record(setup):
    host, rec, _ = setup
    a = chatter.post_message(host, rec, "one")
    b = chatter.post_message(host, rec, "two")
    assert a.message_id != b.message_id
    assert a.message_id.startswith("<") and a.message_id.endswith("@example.com>")
    assert f"-postroom-{rec.id}-generic@" in a.message_id


def test_fan_out_statement_count_does_not_grow_with_followers(make_host, db_url):
    host = make_host(db_url=db_url)
    counts = {}
    for size in (5, 300):
        rec = records.create_record(host, "generic", f"R{size}")
        with host.transaction():
            start = Partner.select().count()
            Partner.insert_many([{"name": f"P{i}", "email": f"p{size}_{i}@example.com",
                                  "email_normalized": f"p{size}_{i}@example.com",
                                  "created_at": host.clock.now()} for i in range(size)]).execute()
            ids = [p.id for p in Partner.select(Partner.id).order_by(Partner.id).offset(start)]
            Follower.insert_many([{"record": rec.id, "partner": i} for i in ids]).execute()
        before = host.statements()
        msg = chatter.post_message(host, rec, "hello all")
        counts[size] = host.statements() - before
        assert Notification.select().where(Notification.message == msg).count() == size
    assert counts[5] == counts[300]
