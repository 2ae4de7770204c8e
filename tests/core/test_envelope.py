"""The envelope: red while any notification failed, white otherwise."""
from postroom.core import chatter, records
from postroom.core.models import Notification
from tests.core.plugin_fixtures import EmailChannel


def _post(host):
    rec = records.create_record(host, "generic", "Deal")
    for n in ("ann", "bob"):
        partner = records.find_partner(host, f"{n}@example.com", required=False)
        records.follow(host, rec, partner or records.create_partner(host, n, f"{n}@example.com"))
    return chatter.post_message(host, rec, "hi")


def test_envelope_is_red_while_a_notification_is_in_exception_or_bounce(make_host, db_url):
    host = make_host(db_url=db_url, available={"email_fx": EmailChannel()}, plugins=["email_fx"])
    msg = _post(host)
    assert chatter.envelope(msg) == "white"
    first = Notification.select().where(Notification.message == msg).order_by(Notification.id).first()
    for failed in ("exception", "bounce"):
        Notification.update(status=failed, failure_type="mail_smtp").where(Notification.id == first.id).execute()
        assert chatter.envelope(msg) == "red"
    Notification.update(status="canceled").where(Notification.id == first.id).execute()
    assert chatter.envelope(msg) == "white"


def test_envelopes_of_many_messages_come_from_one_query(make_host):
    host = make_host(available={"email_fx": EmailChannel()}, plugins=["email_fx"])
    msgs = [_post(host) for _ in range(5)]
    Notification.update(status="bounce").where(Notification.message == msgs[2]).execute()
    before = host.statements()
    states = chatter.envelopes([m.id for m in msgs])
    assert host.statements() - before == 1
    assert [states[m.id] for m in msgs] == ["white", "white", "red", "white", "white"]
