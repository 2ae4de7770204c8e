"""Real SMTP servers on 127.0.0.1 for Postroom's tests.

The recording sink and its fault-injecting variants live in `postroom.testing` (shipped,
so plugin authors test against the same server); this module re-exports them and adds the
`smtp_sink` factory fixture:

    with SMTPSink() as sink:                      # accepts everything
        ...; sink.wait_for(3); sink.messages[0].rcpt_tos
    SMTPSink(data_reply="451 4.3.0 try later")    # every DATA answered 4xx
    SMTPSink(data_reply="550 5.7.1 no")           # every DATA answered 5xx
    SMTPSink(rcpt_replies={"bad@x.org": "550 5.1.1 no such user"})   # chosen recipients
    SMTPSink(mail_reply="550 5.7.1 sender refused")                   # MAIL FROM refused
    SMTPSink(drop_after=2)                        # accepts 2 messages, then drops the connection at DATA
    SMTPSink(stall_seconds=5)                     # never answers DATA in time
    SMTPSink(stall_seconds=30, stall_after=3)     # accepts 3 messages, then hangs at DATA
    SMTPSink(fail_first=2, data_reply="451 ...")  # 4xx for the first 2 messages, then accepts
    SMTPSink(pipelining=True)                     # advertises PIPELINING (RFC 2920)
    SMTPSink(smtputf8=False)                      # does not offer SMTPUTF8 (RFC 6531)
    closed_port()                                 # a port where nothing listens (refused)
"""
import pytest

from postroom.testing import Received, SMTPSink, closed_port, free_port

__all__ = ["Received", "SMTPSink", "closed_port", "free_port", "smtp_sink"]


@pytest.fixture
def smtp_sink():
    """smtp_sink(**faults) → a started SMTPSink, stopped after the test. Import this fixture
    into your test module (`from tests.support.smtp import smtp_sink`)."""
    started = []

    def factory(**kwargs):
        sink = SMTPSink(**kwargs).start()
        started.append(sink)
        return sink

    yield factory
    for sink in started:
        sink.stop()
