"""The benchmarks' SMTP sink: the server side of SMTP reduced to "yes" and a count.

aiosmtpd costs about a millisecond of CPU per message, which on a small machine would make
the sink, not the sender, the thing measured. Shared by queue_throughput.py, scale.py and
campaign.py (which runs it, or Postfix's smtp-sink, in another process).
"""
import os


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


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port, pipelining=True):
    """Run SinkProtocol on 127.0.0.1:port until stdin closes (the sink-process entry point)."""
    import asyncio
    import sys
    import threading

    async def run():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: SinkProtocol(lambda: None, pipelining), "127.0.0.1", port)
        print("ready", flush=True)
        done = asyncio.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(done.set)),
                         daemon=True).start()
        await done.wait()
        server.close()
    asyncio.run(run())


class external_sink:
    """A sink in another process for the length of a `with`: the given HOST:PORT as is, else
    Postfix's smtp-sink (C, so the sink costs almost nothing) when installed, else this
    module's SinkProtocol in its own interpreter. Yields ("HOST:PORT", kind)."""

    def __init__(self, given=None):
        self.given = given
        self.proc = None

    def __enter__(self):
        import shutil
        import socket
        import subprocess
        import sys
        import time
        if self.given:
            return self.given, "given"
        port = free_port()
        binary = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)
        if binary:
            # -u: smtp-sink refuses to run as root without a user to switch to; 1000: backlog
            user = ["-u", "nobody"] if os.geteuid() == 0 else []
            self.proc = subprocess.Popen([binary, *user, f"127.0.0.1:{port}", "1000"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return f"127.0.0.1:{port}", "postfix smtp-sink"
                except OSError:
                    time.sleep(0.05)
            raise SystemExit("smtp-sink did not start")
        self.proc = subprocess.Popen([sys.executable, __file__, str(port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        return f"127.0.0.1:{port}", "bench/smtp_sink.py"

    def __exit__(self, *exc):
        if self.proc is not None:
            if self.proc.stdin:
                self.proc.stdin.close()
            else:
                self.proc.terminate()
            self.proc.wait(10)


if __name__ == "__main__":
    import sys
    serve(int(sys.argv[1]))
