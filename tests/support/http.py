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
        result = Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        result.set_cookies = [v for k, v in resp.getheaders() if k.lower() == "set-cookie"]
        return result
    finally:
        conn.close()


class ConsoleClient:
    """A logged-in (or not) visitor of the console: keeps cookies and the CSRF token of the
    last page it saw, like a browser would."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    def _headers(self, extra=None):
        headers = dict(extra or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return headers

    def _keep(self, resp):
        import re
        for raw in resp.set_cookies:
            name, _, rest = raw.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in raw or value in ('""', ""):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        found = re.findall(r'name="csrf" value="([^"]+)"', resp.text)
        if found:
            self.csrf = found[-1]
        return resp

    def get(self, path, **kw):
        return self._keep(request(self.base_url, "GET", path, headers=self._headers(kw.pop("headers", None)), **kw))

    def post(self, path, data=None, csrf=True, headers=None):
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf", self.csrf)
        return self._keep(request(self.base_url, "POST", path, body=data, headers=self._headers(headers)))

    def login(self, email, password, next_path="/"):
        self.get("/login")
        return self.post("/login", {"email": email, "password": password, "next": next_path})


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
