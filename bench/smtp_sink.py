"""The benchmarks' SMTP sink: the server side of SMTP reduced to "yes" and a count.

aiosmtpd costs about a millisecond of CPU per message, which on a small machine would make
the sink, not the sender, the thing measured. Shared by queue_throughput.py and scale.py.
"""


class SinkProtocol:
    """Answers every command with success; offers PIPELINING (RFC 2920) unless told not to."""

    def __init__(self, on_message, pipelining=True):
        self.on_message = on_message  # called once per message received
        self.pipelining = pipelining
        self.buf = b""
        self.in_data = False

    def connection_made(self, transport):
        self.transport = transport
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data):
        self.buf += data
        while True:
            if self.in_data:
                if self.buf.startswith(b".\r\n"):
                    end, skip = 0, 3
                else:
                    end = self.buf.find(b"\r\n.\r\n")
                    skip = 5
                if end < 0:
                    return
                self.buf = self.buf[end + skip:]
                self.in_data = False
                self.on_message()
                self.transport.write(b"250 2.0.0 OK\r\n")
                continue
            i = self.buf.find(b"\r\n")
            if i < 0:
                return
            line, self.buf = self.buf[:i], self.buf[i + 2:]
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.transport.write(b"250-sink\r\n" + (b"250-PIPELINING\r\n" if self.pipelining else b"")
                                     + b"250-8BITMIME\r\n250 SIZE 100000000\r\n")
            elif verb == b"DATA":
                self.in_data = True
                self.transport.write(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.close()
                return
            else:
                self.transport.write(b"250 OK\r\n")

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        pass
