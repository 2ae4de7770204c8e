"""The console's frame: login and logout, the home page, layout, navigation and static files,
and the guard every plugin screen sits behind.

A plugin's screens are the routes it registers without `public=True` (see
`postroom_http_routes`). The guard lets in only a request with a live session; it refuses a
POST whose form does not carry the session's CSRF token, a POST from another origin, and
every POST of a read-only operator. Screens render through `render()` (templates extend
`base.html`), answer a POST with `done()` (a 303 back with a one-time message), and call
`audit()` for every action, which logs who did what and posts it on the record's chatter.
"""
import functools
import os
import secrets
from urllib.parse import parse_qs, quote, urlparse

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import chatter
from ..errors import NotFound, PostroomError
from ..web import db, host_of
from . import operators

HERE = os.path.dirname(__file__)
COOKIE = "postroom_session"
LOGIN_COOKIE = "postroom_login"  # double-submit CSRF token of the login form
SAFE_METHODS = ("GET", "HEAD")
# Console pages are never framed by another site (clickjacking), never cached (they show
# mail addresses and server replies), and run no script but our own stylesheet's page.
PAGE_HEADERS = {"X-Frame-Options": "DENY", "Cache-Control": "no-store",
                "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


# --- templates ---------------------------------------------------------------------------

def environment(groups) -> jinja2.Environment:
    """Jinja2 with autoescape: the host's templates, and each plugin's as `plugin/file`."""
    plugin_dirs = {}
    for group in groups:
        if group.templates:
            plugin_dirs.setdefault(group.plugin, group.templates)
    loader = jinja2.ChoiceLoader([
        jinja2.FileSystemLoader(os.path.join(HERE, "templates")),
        jinja2.PrefixLoader({name: jinja2.FileSystemLoader(path) for name, path in plugin_dirs.items()}),
    ])
    env = jinja2.Environment(loader=loader, autoescape=jinja2.select_autoescape(default=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = lambda v: "" if v is None else v.strftime("%Y-%m-%d %H:%M:%S")
    env.globals["query"] = _query
    return env


def _query(request, **changes) -> str:
    """The current query string with some parameters changed (pagination, filters)."""
    params = dict(request.query_params)
    params.update({k: str(v) for k, v in changes.items() if v is not None})
    from urllib.parse import urlencode
    return "?" + urlencode({k: v for k, v in params.items() if v != ""})


def nav_entries(request) -> list[tuple[str, str]]:
    return [(g.nav, g.prefix + "/") for g in request.app.state.groups if g.nav and not g.public]


def render(request: Request, template: str, context: dict | None = None, status: int = 200) -> HTMLResponse:
    """A console page: `template` with `context`, plus the operator, the CSRF token, the
    navigation and the one-time message of the last action."""
    state = request.scope.get("state", {})
    session = state.get("session")
    ctx = {"request": request, "operator": state.get("operator"), "csrf": session.csrf if session else "",
           "nav": nav_entries(request), "flash": state.get("flash"), "path": request.url.path,
           "can_act": bool(state.get("operator")) and state["operator"].role != "readonly"}
    ctx.update(context or {})
    html = request.app.state.templates.get_template(template).render(ctx)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def done(request: Request, message: str, to: str | None = None) -> RedirectResponse:
    """After an action: back to `to` (default: the page the form was on) with `message`."""
    host = host_of(request)
    operators.set_flash(host, request.scope["state"]["session"], message[:500])
    target = to or _same_site(request.headers.get("referer")) or request.url.path
    return RedirectResponse(target, status_code=303)


def acting(fn):
    """Decorate a sync POST handler: a PostroomError (the operator's input refused, as the
    CLI would refuse it) becomes the page's one-line message instead of an error page."""
    @functools.wraps(fn)
    def handler(request):
        try:
            return fn(request)
        except PostroomError as exc:
            return done(request, f"Refused: {exc}")
    return handler


def viewing(fn):
    """Decorate a sync GET handler: a PostroomError (no such mail, record, ...) becomes the
    console's error page, 404 for what does not exist, 400 for the rest."""
    @functools.wraps(fn)
    def handler(request):
        try:
            return fn(request)
        except PostroomError as exc:
            return error_page(request, str(exc), 404 if isinstance(exc, NotFound) else 400)
    return handler


def download(data: bytes, filename: str, media_type: str = "application/octet-stream") -> Response:
    """A file to save (an .eml, an attachment), never shown inline."""
    safe = "".join(ch for ch in filename if ch.isalnum() or ch in "._- ") or "download"
    return Response(data, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{safe}"'})


def audit(request: Request, action: str, record=None) -> None:
    """Log an operator's action (who, what; the log line carries when) and, when it concerns
    a record, post it on that record's chatter as an internal note that notifies nobody."""
    host = host_of(request)
    who = request.scope["state"]["operator"].email
    host.log.info("console: operator %s: %s", who, action)
    if record is not None:
        chatter.post_message(host, record, f"{who} (console): {action}", note=True,
                             message_type="notification")


def error_page(request: Request, message: str, status: int) -> HTMLResponse:
    return render(request, "error.html", {"message": message}, status=status)


def _same_site(url: str | None) -> str | None:
    """A path on this site, from a Referer or a `next` parameter, or None (no open redirect)."""
    if not url:
        return None
    if any(ord(ch) < 32 for ch in url):
        return None  # browsers drop tabs and newlines: "/\t/evil.example" would become "//evil.example"
    parsed = urlparse(url)
    path = parsed.path or "/"
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return None
    return path + (f"?{parsed.query}" if parsed.query else "")


# --- the guard ---------------------------------------------------------------------------

def guard(app, group):
    """Wrap a plugin's screens: login, CSRF and role checks before its handlers run."""
    async def guarded(scope, receive, send):
        request = Request(scope, receive)
        host = scope["app"].state.host
        session = await run_in_threadpool(_session_for_request, host, request.cookies.get(COOKIE),
                                          request.method in SAFE_METHODS)
        if session is None:
            if request.method in SAFE_METHODS:
                target = "/login?next=" + quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
                return await RedirectResponse(target, status_code=303)(scope, receive, send)
            return await PlainTextResponse("Forbidden: log in first\n", status_code=403)(scope, receive, send)
        if request.method not in SAFE_METHODS:
            body = await request.body()
            refusal = _post_refusal(request, session, body)
            if refusal:
                host.log.warning("console: POST %s by %s refused: %s", request.url.path,
                                 session.operator.email, refusal)
                return await PlainTextResponse(f"Forbidden: {refusal}\n", status_code=403)(scope, receive, send)
            receive = _replay(body)
        scope.setdefault("state", {})
        scope["state"].update(session=session, operator=session.operator, flash=session.flash,
                              form=_parse_form(request, body if request.method not in SAFE_METHODS else b""))
        await app(scope, receive, send)
    return guarded


def _session_for_request(host, cookie, safe):
    session = operators.load_session(host, cookie)
    if session is not None and safe and session.flash:
        operators.set_flash(host, session, None)  # shown once, on this page
    return session


def _post_refusal(request, session, body: bytes) -> str | None:
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlparse(origin).netloc != request.headers.get("host"):
        return "the form came from another site"
    if session.operator.role == "readonly":
        return "this operator is read-only"
    sent = request.headers.get("x-csrf-token") or (_parse_form(request, body).get("csrf") or [None])[0]
    if not sent or not secrets.compare_digest(sent, session.csrf):
        return "missing or wrong CSRF token (reload the page and try again)"
    return None


def _parse_form(request, body: bytes) -> dict:
    if not body or not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    try:
        return parse_qs(body.decode("utf-8"), max_num_fields=1000)
    except (UnicodeDecodeError, ValueError):
        return {}


def form_value(request: Request, name: str, default: str = "") -> str:
    """One field of the POSTed form (read and checked by the guard)."""
    values = request.scope["state"].get("form", {}).get(name)
    return values[0].strip() if values else default


def form_values(request: Request, name: str) -> list[str]:
    """Every value of a repeated field (checkboxes)."""
    return [v.strip() for v in request.scope["state"].get("form", {}).get(name, [])]


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return receive


# --- login, logout, home -----------------------------------------------------------------

def _cookie_flags(request) -> dict:
    secure = request.app.state.settings["public_url"].startswith("https://")
    return {"httponly": True, "samesite": "strict", "secure": secure, "path": "/"}


def login_page(request: Request, message: str | None = None, status: int = 200):
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, "login.html", {"login_csrf": token, "message": message,
                                              "next": _same_site(request.query_params.get("next")) or "/"},
                      status=status)
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, **_cookie_flags(request))
    return response


async def login(request: Request):
    """GET: the form. POST: check the double-submit token, the rate limit and the password."""
    if request.method == "GET":
        return login_page(request)
    form = await request.form()
    return await db(request, _login, request, form)


def _login(request, form):
    host = host_of(request)
    sent, expected = form.get("csrf") or "", request.cookies.get(LOGIN_COOKIE) or ""
    if not expected or not secrets.compare_digest(sent, expected):
        return login_page(request, "Your login form expired; please try again.", status=403)
    email, password = (form.get("email") or "").strip(), form.get("password") or ""
    client = request.client.host if request.client else "-"
    refusal = operators.login_refused(host, email, client)
    if refusal:
        host.log.warning("console: login for %r from %s refused: %s", email, client, refusal)
        return login_page(request, f"Login refused: {refusal}.", status=429)
    op = operators.authenticate(host, email, password, client)
    if op is None:
        return login_page(request, "Wrong email or password.", status=401)
    response = RedirectResponse(_same_site(form.get("next")) or "/", status_code=303)
    response.set_cookie(COOKIE, operators.open_session(host, op),
                        max_age=operators.session_hours(host) * 3600, **_cookie_flags(request))
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


async def logout(request: Request):
    form = await request.form()
    return await db(request, _logout, request, form)


def _logout(request, form):
    host = host_of(request)
    session = operators.load_session(host, request.cookies.get(COOKIE))
    if session is not None and secrets.compare_digest(form.get("csrf") or "", session.csrf):
        operators.close_session(host, request.cookies.get(COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def home(request: Request):
    """The landing page: the screens this deployment has."""
    host = host_of(request)
    session = _session_for_request(host, request.cookies.get(COOKIE), True)
    if session is None:
        return RedirectResponse("/login", status_code=303)
    request.scope.setdefault("state", {}).update(session=session, operator=session.operator, flash=session.flash)
    return render(request, "home.html", {"enabled": host.enabled})


def routes() -> list:
    """The frame's own routes, for `web.build_app(extra_routes=...)`."""
    return [Route("/", home, methods=["GET"]),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=os.path.join(HERE, "static")), name="static")]
