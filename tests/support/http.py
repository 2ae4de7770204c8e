"""A real HTTP client for tests (the standard library's), and a running HTTP service."""
import contextlib
import http.client
import json
from urllib.parse import urlencode, urlparse


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)


def request(base_url: str, method: str, path: str, body: bytes | dict | None = None,
            headers: dict | None = None, timeout: float = 10) -> Response:
    """One request over a fresh connection; a dict body is sent as a form. Redirects are
    not followed (tests look at them)."""
    parsed = urlparse(base_url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = urlencode(body, doseq=True).encode()
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


@contextlib.contextmanager
def running(host, **kwargs):
    """The host's HTTP service on a free loopback port; yields its base URL."""
    from postroom.core.http_service import HttpService
    service = HttpService(host, bind_host="127.0.0.1", port=0, **kwargs)
    service.start()
    try:
        yield service.url
    finally:
        service.stop()
