"""The HTTP service over real sockets: health, plugin routes, bad input, where it listens."""
import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from postroom.core import records, web
from postroom.core.errors import Conflict
from postroom.core.models import Partner
from postroom.core.plugins import PluginInfo, hookimpl
from tests.support.http import request, running

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Echo:
    """A plugin with public routes: a sync database read, an async one through web.db, one
    that waits for the test to let it go, and one that fails."""
    PLUGIN = PluginInfo("echo_fx", "HTTP routes for tests")

    def __init__(self):
        self.release = threading.Event()

    @hookimpl
    def postroom_http_routes(self, host, register):
        def partners(request):
            return JSONResponse({"count": Partner.select().count()})

        async def partners_async(request):
            count = await web.db(request, lambda: Partner.select().count())
            return JSONResponse({"count": count})

        async def slow(request):
            await web.db(request, self.release.wait, 10)
            return PlainTextResponse("released")

        def broken(request):
            raise RuntimeError("secret internals")

        async def form(request):
            data = await request.form()
            return PlainTextResponse(f"got {len(data.get('text', ''))}")

        register("/echo", [Route("/partners", partners, methods=["GET"]),
                           Route("/partners-async", partners_async, methods=["GET"]),
                           Route("/slow", slow, methods=["GET"]),
                           Route("/broken", broken, methods=["GET"]),
                           Route("/form", form, methods=["POST"])], public=True)
        register("/echo-screens", [Route("/", partners, methods=["GET"])], nav="Echo")


@pytest.fixture
def echo():
    return Echo()


@pytest.fixture
def served(make_host, echo):
    host = make_host(available={"echo_fx": echo}, plugins=["echo_fx"])
    with running(host) as url:
        yield host, url


def test_healthz_says_the_database_answers(served):
    _, url = served
    resp = request(url, "GET", "/healthz")
    assert resp.status == 200
    assert resp.json() == {"status": "ok", "database": "ok"}


def test_plugin_routes_reach_the_database_from_sync_and_async_handlers(served):
    host, url = served
    records.create_partner(host, "Ann", "ann@example.com")
    assert request(url, "GET", "/echo/partners").json()["count"] >= 1
    assert request(url, "GET", "/echo/partners-async").json() == request(url, "GET", "/echo/partners").json()


def test_database_work_in_a_handler_does_not_hold_up_other_requests(served, echo):
    _, url = served
    result = {}
    waiting = threading.Thread(target=lambda: result.update(slow=request(url, "GET", "/echo/slow")))
    waiting.start()
    try:
        time.sleep(0.2)  # the slow request is in its worker thread now
        assert request(url, "GET", "/healthz", timeout=3).status == 200
        assert waiting.is_alive()
    finally:
        echo.release.set()
        waiting.join(10)
    assert result["slow"].text == "released"


def test_unknown_paths_are_404_and_wrong_methods_405(served):
    _, url = served
    assert request(url, "GET", "/nothing-here").status == 404
    assert request(url, "GET", "/echo/nothing").status == 404
    resp = request(url, "POST", "/healthz", body=b"")
    assert resp.status == 405
    assert "GET" in resp.headers["allow"]
    assert request(url, "DELETE", "/echo/partners").status == 405


def test_a_body_over_the_limit_is_413_whether_announced_or_streamed(served):
    _, url = served
    assert request(url, "POST", "/echo/form", body={"text": "x" * 1000}).text == "got 1000"
    big = {"text": "x" * 70_000}
    assert request(url, "POST", "/echo/form", body=big).status == 413
    # chunked: no Content-Length, the limit is found while reading
    parsed = url.split("//", 1)[1]
    conn = http.client.HTTPConnection(*parsed.split(":"), timeout=10)
    conn.putrequest("POST", "/echo/form")
    conn.putheader("Content-Type", "application/x-www-form-urlencoded")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    try:
        for _ in range(20):
            chunk = b"text=" + b"x" * 8000
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert conn.getresponse().status == 413
    conn.close()


def test_a_failing_handler_answers_500_without_a_traceback_and_logs_it(served, tmp_path):
    host, url = served
    resp = request(url, "GET", "/echo/broken")
    assert resp.status == 500
    assert "Traceback" not in resp.text and "secret internals" not in resp.text
    log = (tmp_path / "logs" / "postroom.log").read_text()
    assert "HTTP GET /echo/broken failed" in log and "secret internals" in log


def test_console_screens_are_not_public(served):
    _, url = served
    resp = request(url, "GET", "/echo-screens/")
    assert resp.status in (303, 403)
    assert "count" not in resp.text


def test_a_disabled_plugin_has_no_routes(make_host, echo):
    host = make_host(available={"echo_fx": echo})
    with running(host) as url:
        assert request(url, "GET", "/echo/partners").status == 404
        assert request(url, "GET", "/healthz").status == 200


class Clashing:
    PLUGIN = PluginInfo("clash_fx", "takes a prefix twice")

    def __init__(self, prefix):
        self.prefix = prefix

    @hookimpl
    def postroom_http_routes(self, register):
        register(self.prefix, [])


@pytest.mark.parametrize("prefix", ["/echo", "/healthz", "/login", "no-slash", "/two/segments", "/UPPER"])
def test_a_prefix_taken_reserved_or_malformed_is_refused_when_the_app_is_built(make_host, echo, prefix):
    host = make_host(available={"echo_fx": echo, "clash_fx": Clashing(prefix)}, plugins=["echo_fx", "clash_fx"])
    with pytest.raises(Conflict, match=re.escape(repr(prefix)) if prefix != "/echo" else "echo_fx and clash_fx"):
        web.build_app(host)


def test_the_service_says_it_listens_on_loopback_only(make_host):
    from postroom.core.http_service import HttpService
    host = make_host()
    service = HttpService(host, port=0)
    with service:
        assert service.bind_host == "127.0.0.1"
        assert "loopback only" in service.banner()
    assert "loopback only" in (host.config.path and open(os.path.join(os.path.dirname(host.config.path), "logs",
                                                                        "postroom.log")).read())
    assert "reachable from other machines" in HttpService(host, bind_host="0.0.0.0", port=0).banner()


def test_a_port_in_use_is_one_clear_error_for_http_serve(make_host):
    from postroom.core.errors import ConfigError
    from postroom.core.http_service import HttpService
    host = make_host()
    with HttpService(host, port=0) as first:
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{first.port}"):
            HttpService(host, port=first.port).start()
        beside_scheduler = HttpService(host, port=first.port, required=False)
        beside_scheduler.start()  # logged; `postroom serve` goes on with its scheduler
        assert beside_scheduler.server is None


def _start(tmp_path, *args):
    cfg = tmp_path / "postroom.cfg"
    cfg.write_text("[postroom]\ndatabase = sqlite:///p.db\nlog_dir = logs\nserve_poll_seconds = 0.1\n"
                   "http_port = 0\n")
    env = dict(os.environ, POSTROOM_CONFIG=str(cfg), PYTHONPATH=ROOT)
    subprocess.run([sys.executable, "-m", "postroom.cli", "init"], env=env, cwd=tmp_path, check=True,
                   capture_output=True)
    return subprocess.Popen([sys.executable, "-m", "postroom.cli", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("command", [["http", "serve"], ["serve", "--role", "http"], ["serve"]])
def test_the_real_command_serves_http_until_sigterm(tmp_path, command):
    proc = _start(tmp_path, *command)
    try:
        banner = proc.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+) \(loopback only", banner)
        assert match, banner
        resp = request(match.group(1), "GET", "/healthz")
        assert resp.status == 200 and resp.json()["database"] == "ok"
        assert request(match.group(1), "GET", "/missing").status == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_http_serve_on_a_taken_port_exits_with_one_line(tmp_path):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        proc = _start(tmp_path, "http", "serve", "--port", str(taken.getsockname()[1]))
        out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert err.strip().startswith("Error: HTTP service cannot listen on 127.0.0.1:")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_healthz_is_503_when_the_database_goes_away(make_host, echo, pg_database):
    import psycopg
    from urllib.parse import urlparse
    host = make_host(db_url=pg_database)
    with running(host) as url:
        assert request(url, "GET", "/healthz").status == 200
        p = urlparse(pg_database)
        with psycopg.connect(host=p.hostname, port=p.port or 5432, user=p.username, dbname="postgres",
                             autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                          (p.path.lstrip("/"),))
        resp = request(url, "GET", "/healthz")
        assert resp.status == 503
        assert resp.json() == {"status": "fail", "database": "unreachable"}
        # the worker thread's dead connection was closed: the next request reconnects
        assert request(url, "GET", "/healthz").status == 200
