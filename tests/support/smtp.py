"""Real SMTP servers on 127.0.0.1 for Postroom's tests.

The recording sink and its fault-injecting variants (`SMTPSink(data_reply=...)`,
`rcpt_replies`, `drop_after`, `stall_seconds`, `pipelining`, ...: see its docstring) live
in `postroom.testing`, shipped so that plugin authors test against the same server; this
module re-exports them for Postroom's tests and adds the `smtp_sink` factory fixture, and
`TricklingServer`, a greeting trickled one byte at a time.
"""
import socket
import threading

import pytest

from postroom.testing import Received, SMTPSink, closed_port, free_port

__all__ = ["Received", "SMTPSink", "TricklingServer", "closed_port", "free_port", "smtp_sink"]


class TricklingServer:
    """A TCP server on 127.0.0.1 that sends its SMTP greeting one byte every `interval`
    seconds and never finishes it: each read succeeds, the greeting never completes."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.host, self.port = "127.0.0.1", free_port()
        self.connections = 0
        self._stop = threading.Event()
        self._sock = socket.create_server((self.host, self.port))
        self._sock.settimeout(0.2)
        self._threads = []

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._trickle, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _trickle(self, conn):
        with conn:
            for byte in b"220 slow.example ESMTP " + b"." * 10000:
                if self._stop.wait(self.interval):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def __enter__(self):
        thread = threading.Thread(target=self._serve, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self._sock.close()


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
