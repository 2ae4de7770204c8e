"""Real SMTP servers on 127.0.0.1 for Postroom's tests.

The recording sink and its fault-injecting variants (`SMTPSink(data_reply=...)`,
`rcpt_replies`, `drop_after`, `stall_seconds`, `pipelining`, ...: see its docstring) live
in `postroom.testing`, shipped so that plugin authors test against the same server; this
module re-exports them for Postroom's tests and adds the `smtp_sink` factory fixture.
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
