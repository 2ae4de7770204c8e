from core import chatter
from plugins.mail_queue.models import OutgoingMail

from .conftest import record_with_followers


def test_a_comment_reaches_each_follower_right_after_commit(mail_host, sink):
    host = mail_host()
    rec, people = record_with_followers(host, "ann@example.org", "bob@example.org")
    msg = chatter.post_message(host, rec, "Hello", subject="Kick-off")
    got = sink.wait_for(2)
    assert sorted(r.rcpt_tos[0] for r in got) == ["ann@example.org", "bob@example.org"]
    assert {r.message_id for r in got} == {msg.message_id}
    assert OutgoingMail.select().count() == 0
    assert {n["status"] for n in chatter.notification_rows(msg)} == {"sent"}
