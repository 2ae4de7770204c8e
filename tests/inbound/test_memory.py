"""Memory under large mail, measured on a real gateway process (`postroom inbound serve`):
eight clients sending a maximum-size message at once keep its peak RSS under 150 MB (it
was 1.38 GB), since message data is spooled to disk, large messages are processed one at
a time and their memory is given back after each."""
import base64
import os
import smtplib
import socket
import subprocess
import sys
import threading
import time

import pytest

from postroom.plugins.inbound import aliases
from postroom.plugins.inbound.models import InboundOriginal
from tests.support.smtp import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_SIZE = 25 * 1024 * 1024


def big_message(i: int) -> bytes:
    """A mail with a base64 attachment, just under the default inbound_max_size."""
    head = (f"From: Client {i} <c{i}@client.test>\r\nTo: support@example.com\r\nSubject: Scan {i}\r\n"
            f"Message-Id: <big{i}@client.test>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n"
            f"Here is the scan.\r\n--XX\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            f"Content-Disposition: attachment; filename=\"scan.pdf\"\r\n\r\n").encode()
    line = base64.b64encode(os.urandom(57)) + b"\r\n"
    body = line * ((MAX_SIZE - len(head) - 4096) // len(line))
    return head + body + b"--XX--\r\n"


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.heavy
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
def test_eight_concurrent_maximum_size_messages_keep_the_gateway_under_150_mb(inbound_host, tmp_path):
    host = inbound_host(inbound_loop_max_peer=1000)
    aliases.add_alias(host, "support", "generic")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=ROOT, POSTROOM_CONFIG=str(host.config.path))
    out = open(tmp_path / "gateway.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "postroom.cli", "inbound", "serve", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        messages = [big_message(i) for i in range(8)]
        # From here on: the peak of the gateway at work, not of its start (imports).
        with open(f"/proc/{proc.pid}/clear_refs", "w") as fh:
            fh.write("5")
        replies = {}

        def send(i):
            with smtplib.SMTP("127.0.0.1", port, timeout=300) as client:
                client.ehlo("client.test")
                client.mail(f"c{i}@client.test")
                client.rcpt("support@example.com")
                replies[i] = client.data(messages[i])[0]
        threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        peak = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        out.close()
    assert replies == {i: 250 for i in range(8)}, (tmp_path / "gateway.out").read_text()[-2000:]
    assert InboundOriginal.select().count() == 8
    assert peak < 150, f"gateway peak RSS {peak:.0f} MB"
