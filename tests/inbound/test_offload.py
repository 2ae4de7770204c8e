"""A slow outgoing server never holds up the gateway's answer to DATA."""
import time

from postroom.core import chatter, records
from postroom.core.models import Message
from tests.support.smtp import SMTPSink

from .conftest import message, transaction


def test_followers_mail_leaves_in_the_background_so_the_gateway_answers_at_once(make_host, gateway):
    with SMTPSink(stall_seconds=3) as slow:
        host = make_host(plugins=["mail_queue", "inbound"],
                         config={"smtp_host": slow.host, "smtp_port": slow.port, "smtp_timeout": "10"})
        records.ensure_admin(host, "admin@example.com")
        record = records.create_record(host, "generic", "Quote 7")
        records.follow(host, record, records.create_partner(host, "Sales", "sales@example.org"))
        sent = chatter.post_message(host, record, "Draft", subject="Quote 7", note=True)
        data = message(subject="Re: Quote 7", body="Looks good", sender="Cy <cy@customer.test>",
                       to="catchall@example.com", message_id="<cy7@customer.test>",
                       headers={"In-Reply-To": sent.message_id})
        t0 = time.monotonic()
        _, (code, _) = transaction(gateway(host), "cy@customer.test", ["catchall@example.com"], data)
        answered = time.monotonic() - t0
        assert code == 250
        assert answered < 2.5, f"DATA answered after {answered:.1f}s: the slow server held it up"
        posted = Message.get(Message.message_id == "<cy7@customer.test>")
        [out] = slow.wait_for(1, timeout=15)  # the follower's notification still goes out
        assert out.message_id == posted.message_id and out.rcpt_tos == ["sales@example.org"]
