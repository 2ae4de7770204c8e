"""The HTTP app: a Starlette application built for one host, with the plugins' routes.

`build_app(host)` mounts the host's own endpoints (`/healthz`, `/metrics`) and every group of routes
the enabled plugins register through `postroom_http_routes`. The app is wrapped in a body
limit (413 past `http_max_body`), and errors never carry a traceback: 404 and 405 are
Starlette's plain answers, anything unexpected a plain 500 with the details in the log.
Database work runs on Starlette's worker threads (plain `def` handlers, or `await db(...)`),
whose number `http_workers` bounds, so the event loop never waits on the database.
"""
import contextlib
import dataclasses
import functools
import inspect
import re

import anyio.to_thread
import peewee as pw
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from . import metrics
from .errors import Conflict, first_line

PREFIX = re.compile(r"^/[a-z0-9][a-z0-9_-]{0,39}$")
RESERVED = {"/healthz", "/metrics", "/static", "/login", "/logout", "/console"}
DB_ERRORS = (pw.OperationalError, pw.InterfaceError)


@dataclasses.dataclass
class RouteGroup:
    """One `register(...)` call of a plugin: its routes under its prefix."""
    plugin: str
    prefix: str
    routes: list
    public: bool = False
    nav: str | None = None
    templates: str | None = None
    links: dict | None = None


def settings(host) -> dict:
    """The HTTP settings (declared, typed and checked in `core.config`)."""
    cfg = host.config
    host_name, port = cfg.value("http_host").strip(), cfg.value("http_port")
    public = (cfg.value("public_url") or "").strip().rstrip("/")
    return {"host": host_name, "port": port, "max_body": cfg.value("http_max_body"),
            "workers": cfg.value("http_workers"), "public_url": public or f"http://{host_name}:{port}"}


def public_url(host) -> str:
    """The address the world reaches the HTTP service at (`public_url`, e.g. behind a
    reverse proxy terminating TLS), without a trailing slash; links in mail start here."""
    return settings(host)["public_url"]


async def db(request: Request, fn, *args, **kwargs):
    """Run blocking database work `fn(*args, **kwargs)` on the HTTP worker threads and
    return its result; the event loop goes on serving meanwhile."""
    return await run_in_threadpool(_closing_on_db_error(host_of(request), fn), *args, **kwargs)


def host_of(request: Request):
    """The `Host` serving this request (the deployment whose database a handler works on)."""
    return request.app.state.host


def _closing_on_db_error(host, fn):
    """A database failure closes that worker thread's connection, so the next request on
    the thread reconnects instead of reusing a dead one."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DB_ERRORS:
            try:
                host.db.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
            raise
    return call


def _guard_sync(host, endpoint):
    """Sync endpoints run on the worker threads; give them the same reconnect rule."""
    if not inspect.isfunction(endpoint) or inspect.iscoroutinefunction(endpoint):
        return endpoint
    return _closing_on_db_error(host, endpoint)


def collect_groups(host) -> list[RouteGroup]:
    """Every plugin's registered routes, checked for prefixes that are malformed, reserved
    or taken twice."""
    groups: list[RouteGroup] = []
    for impl in host.hook.postroom_http_routes.get_hookimpls():
        def register(prefix, routes, public=False, nav=None, templates=None, links=None,
                     _plugin=impl.plugin_name):
            if not isinstance(prefix, str) or not PREFIX.match(prefix) or prefix in RESERVED:
                raise Conflict(f"plugin {_plugin}: HTTP prefix {prefix!r} is not allowed (one lower-case "
                               f"segment like '/queue', none of {', '.join(sorted(RESERVED))})")
            taken = next((g for g in groups if g.prefix == prefix), None)
            if taken is not None:
                raise Conflict(f"HTTP prefix {prefix} is registered by {taken.plugin} and {_plugin}")
            groups.append(RouteGroup(_plugin, prefix, list(routes), bool(public), nav, templates,
                                     dict(links or {})))
        kwargs = {"host": host, "register": register}
        impl.function(*[kwargs[name] for name in impl.argnames])
    return groups


async def healthz(request: Request):
    """200 when the database answers a query, 503 otherwise (for load balancers)."""
    host = host_of(request)
    try:
        await db(request, lambda: host.db.execute_sql("SELECT 1").fetchall())
    except DB_ERRORS as exc:
        host.log.warning("healthz: database unreachable: %s", first_line(exc) or type(exc).__name__)
        return JSONResponse({"status": "fail", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


async def metrics_endpoint(request: Request):
    """OpenMetrics text for Prometheus, read from the database on a worker thread."""
    body = await db(request, metrics.render, host_of(request))
    return Response(body, media_type=metrics.CONTENT_TYPE_LATEST)


async def _server_error(request: Request, exc: Exception):
    host_of(request).log.error("HTTP %s %s failed", request.method, request.url.path, exc_info=exc)
    if isinstance(exc, DB_ERRORS):
        return PlainTextResponse("Service unavailable: the database cannot be reached\n", status_code=503)
    return PlainTextResponse("Internal Server Error\n", status_code=500)


def build_app(host, extra_routes=(), wrap_console=None):
    """The ASGI app for `host`: host endpoints, then each plugin's groups.

    `extra_routes` are more host routes (the console's frame); `wrap_console(app, group)`
    wraps a non-public group's mount with the console's login and CSRF guard (without the
    console, such groups answer 403)."""
    conf = settings(host)
    routes = [Route("/healthz", healthz, methods=["GET"]),
              Route("/metrics", metrics_endpoint, methods=["GET"])] + list(extra_routes)
    groups = collect_groups(host)
    for group in groups:
        for route in group.routes:
            if isinstance(route, Route):
                route.endpoint = _guard_sync(host, route.endpoint)
        mount = Mount(group.prefix, routes=group.routes)
        if not group.public:
            mount = Mount(group.prefix, app=(wrap_console or _console_missing)(mount.app, group))
        routes.append(mount)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # Each worker thread keeps its own database connection: bound how many there are.
        anyio.to_thread.current_default_thread_limiter().total_tokens = conf["workers"]
        yield

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={Exception: _server_error})
    app.state.host = host
    app.state.groups = groups
    app.state.settings = conf
    return BodyLimit(app, conf["max_body"])


def _console_missing(app, group):
    async def refuse(scope, receive, send):
        await PlainTextResponse("Forbidden: operator console not available\n", status_code=403)(scope, receive, send)
    return refuse


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413, whether it says
    so in Content-Length or streams past it. The (small) body is read before the app runs
    and handed on whole, so the app never starts on a request it cannot finish."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    def __getattr__(self, name):  # app.state, app.router for whoever holds the wrapper
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for key, value in scope.get("headers", []):
            if key == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                return await self._refuse(scope, receive, send)
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            seen += len(message.get("body", b""))
            if seen > self.limit:
                return await self._refuse(scope, receive, send)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        response = PlainTextResponse(f"Payload Too Large: at most {self.limit} bytes\n", status_code=413)
        await response(scope, receive, send)
