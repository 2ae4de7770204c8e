"""What sending reads of its claimed mails is what peewee reads of them, on both engines."""
from postroom.plugins.mail_queue import claims, sending
from postroom.plugins.mail_queue.models import OutgoingMail as M


def test_claimed_rows_hold_what_peewee_reads_and_each_its_own_documents(mail_host, db_url):
    host = mail_host(db_url=db_url)
    mails = [{"email_to": f"r{i}@example.org", "subject": "News", "body_html": "<p>Hi</p>",
              "headers": {"Precedence": "bulk", "X-N": str(i % 2)}, "ref": f"r{i}", "bulk": True,
              "auto_delete": bool(i % 3)} for i in range(6)]
    mails[5]["headers"] = None
    host.service("mail").enqueue(mails[:4])
    host.clock.advance(seconds=1)  # the last two enqueued later: an expiry of their own
    host.service("mail").enqueue(mails[4:])
    token, taken = claims.claim(host, "w1", 100)
    assert taken == 6
    rows = sending._claimed_rows(host, token)
    theirs = list(M.select(*sending.SEND_FIELDS).where(M.lease_owner == token).order_by(M.id).tuples())
    assert [tuple(r) for r in rows] == theirs
    assert len({r.expires_at for r in rows}) == 2  # each enqueue call's
    documents = [r.headers for r in rows if r.headers is not None]
    assert len({id(d) for d in documents}) == len(documents)  # equal headers, yet not one dict
