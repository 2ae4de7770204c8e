"""The HTTP service: the host's Starlette app on uvicorn, in a thread beside the scheduler.

The socket is bound in `start()` (so a port in use is a clear error there, not a dying
thread), then uvicorn serves it on its own event loop in a background thread. Binding to
loopback is the default; `start()` says where it listens and whether the world can reach it.
"""
import ipaddress
import logging
import socket
import sys
import threading

import uvicorn

from .errors import ConfigError, PostroomError
from .web import settings


def is_loopback(bind_host: str) -> bool:
    """True when `bind_host` is reachable from this machine only."""
    if bind_host == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind_host).is_loopback
    except ValueError:
        return False


class HttpService:
    """A `postroom serve` service: `start()` returns once the socket listens."""

    def __init__(self, host, bind_host=None, port=None, app_factory=None, required=True,
                 announce=False):
        conf = settings(host)
        # Not required (beside the scheduler in `postroom serve`): a port already taken is
        # logged and the scheduler goes on; required (`http serve`): it is the error.
        self.required = required
        self.announce = announce
        self.host = host
        self.bind_host = bind_host or conf["host"]
        self.port = conf["port"] if port is None else int(port)
        self.configured_public_url = (host.config.get("public_url") or "").strip()
        self.app_factory = app_factory or _default_app
        self.name = f"HTTP service on {self.bind_host}:{self.port}"
        self.server = None
        self.thread = None
        self.sock = None

    @property
    def url(self) -> str:
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"http://{host}:{self.port}"

    def banner(self) -> str:
        where = ("loopback only: not reachable from other machines" if is_loopback(self.bind_host)
                 else "reachable from other machines: put a TLS-terminating proxy in front")
        public = self.configured_public_url or f"{self.url} (public_url is not set)"
        return f"HTTP service listening on {self.url} ({where}); public URL {public}"

    def start(self):
        try:
            self._start()
        except PostroomError as exc:
            if self.required:
                raise
            self.host.log.error("%s; the scheduler goes on without it", exc)
            if self.announce:
                print(f"warning: {exc}; the scheduler goes on without it", file=sys.stderr, flush=True)

    def _start(self):
        family = socket.AF_INET6 if ":" in self.bind_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.bind_host, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"HTTP service cannot listen on {self.bind_host}:{self.port}: "
                              f"{exc.strerror or exc}") from None
        sock.listen(128)
        sock.set_inheritable(True)
        self.sock = sock
        self.port = sock.getsockname()[1]  # port 0 asks the kernel for a free one
        self.name = f"HTTP service on {self.bind_host}:{self.port}"
        app = self.app_factory(self.host)
        config = uvicorn.Config(app, log_config=None, lifespan="on", access_log=False,
                                timeout_keep_alive=5, limit_concurrency=200,
                                timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        # uvicorn's own lines (a malformed request, an app error) go to postroom.log too,
        # not to the terminal's stderr.
        uvicorn_log = logging.getLogger("uvicorn")
        uvicorn_log.propagate = False
        for handler in self.host.log.handlers:
            if handler not in uvicorn_log.handlers:
                uvicorn_log.addHandler(handler)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       name="postroom-http", daemon=True)
        self.thread.start()
        for _ in range(200):
            if self.server.started or not self.thread.is_alive():
                break
            threading.Event().wait(0.025)
        if not self.server.started:
            self.stop()
            raise ConfigError(f"HTTP service on {self.bind_host}:{self.port} did not start (see postroom.log)")
        self.host.log.info(self.banner())
        if self.announce:
            print(self.banner(), file=sys.stderr, flush=True)

    def stop(self):
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(15)
            self.thread = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.server = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


def _default_app(host):
    from .console import build_app as with_console
    return with_console(host)
