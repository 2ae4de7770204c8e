"""A small authoritative DNS server on loopback for tests: TXT records from a dict.

    with DnsServer({"example.com": ["v=spf1 -all"]}) as server:
        config = {"dns_resolver": server.address}   # "127.0.0.1:PORT"

Names not in the dict get NXDOMAIN; a name in the dict asked for another type gets an
empty answer (NoAnswer). `records` may be changed while the server runs.
"""
import socket
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


def _txt_rdata(text: str) -> str:
    # TXT strings are at most 255 bytes each: split long values like real zone files do.
    chunks = [text[i:i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


class DnsServer:
    """UDP DNS server answering TXT queries from `records` ({name: [txt, ...]})."""

    def __init__(self, records: dict | None = None):
        self.records = {self._key(k): list(v) for k, v in (records or {}).items()}
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)

    @staticmethod
    def _key(name: str) -> str:
        return name.lower().rstrip(".")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "DnsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _serve(self):
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:  # noqa: BLE001 - garbage on the wire: ignore like a real server
                continue
            self.sock.sendto(self._answer(query).to_wire(), peer)

    def _answer(self, query):
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = self._key(question.name.to_text())
        self.queries.append(name)
        if name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT and self.records[name]:
            response.answer.append(dns.rrset.from_text_list(
                question.name, 300, dns.rdataclass.IN, dns.rdatatype.TXT,
                [_txt_rdata(t) for t in self.records[name]]))
        return response
