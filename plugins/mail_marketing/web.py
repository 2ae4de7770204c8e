"""The public web endpoints of campaigns: RFC 8058 one-click unsubscribe and its page, and
the click redirect and open pixel of tracked campaigns (`/c/TOKEN`, `/o/TOKEN`).

`GET /u/TOKEN` shows a page with a button and changes nothing (mail scanners follow
links); `POST /u/TOKEN` with `List-Unsubscribe=One-Click` (what a mailbox provider sends,
and what the button sends) opts out at once; `POST /u/RTOKEN/resubscribe` undoes it. A
forged or mangled token is 404 and changes nothing. Handlers are async and do their
database work through `web.db`, on the HTTP worker threads.
"""
import html

from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from postroom.core import web

from . import optout, tracking
from .optout import RESUBSCRIBE_PURPOSE

HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex", "Referrer-Policy": "no-referrer"}


def _page(title: str, text: str, form: str = "", status: int = 200) -> HTMLResponse:
    body = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{html.escape(title)}</title>"
            f"</head><body style=\"font-family:sans-serif;max-width:32em;margin:3em auto\">"
            f"<h1>{html.escape(title)}</h1><p>{text}</p>{form}</body></html>")
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def _not_found() -> HTMLResponse:
    return _page("Link not valid", "This link is not valid (it may have been cut or changed).", status=404)


def _button(action: str, label: str, hidden: str = "") -> str:
    return (f"<form method=\"post\" action=\"{html.escape(action)}\">{hidden}"
            f"<button type=\"submit\">{html.escape(label)}</button></form>")


def _who(info: dict) -> str:
    if not info["email"]:
        return "This was a test copy of a campaign: there is nobody to unsubscribe."
    subject = f" (the campaign “{html.escape(info['subject'])}”)" if info["subject"] else ""
    return f"{html.escape(info['email'])}, receiving mail from these lists{subject}."


def _resubscribe_form(host, value) -> str:
    # Relative to /u/TOKEN, so the page works under any prefix a reverse proxy adds.
    return _button(f"{optout.resubscribe_token(host, value)}/resubscribe", "Resubscribe")


async def page(request):
    host = web.host_of(request)
    value = optout.verified(host, request.path_params["token"])
    if value is None:
        return _not_found()
    info = await web.db(request, optout.describe, value)
    if info["email"] and not info["subscribed"]:
        return _page("You are unsubscribed", f"{_who(info)} You will not receive them any more.",
                     _resubscribe_form(host, value))
    hidden = "<input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">"
    return _page("Unsubscribe", _who(info), _button(request.path_params["token"], "Unsubscribe", hidden))


async def one_click(request):
    host = web.host_of(request)
    value = optout.verified(host, request.path_params["token"])
    if value is None:
        return _not_found()
    form = await request.form()
    if form.get("List-Unsubscribe") != "One-Click":
        return _page("Nothing changed", "To unsubscribe, use the button on the page of this link.",
                     status=400)
    result = await web.db(request, optout.opt_out, host, value, "List-Unsubscribe one-click")
    if result == "test":
        return _page("Test copy", "This was a test copy of a campaign: there is nobody to unsubscribe.")
    return _page("You are unsubscribed", "You will not receive mail from these lists any more.",
                 _resubscribe_form(host, value))


async def resubscribe(request):
    host = web.host_of(request)
    value = optout.verified(host, request.path_params["token"], RESUBSCRIBE_PURPOSE)
    if value is None:
        return _not_found()
    await web.db(request, optout.resubscribe, host, value)
    return _page("You are subscribed again", "You will receive mail from these lists again.")


async def click(request):
    """302 to the campaign's own link the token names; 404 for anything else."""
    host = web.host_of(request)
    target = await web.db(request, tracking.click_target, host, request.path_params["token"])
    if target is None:
        return _not_found()
    return RedirectResponse(target, status_code=302, headers=HEADERS)


async def pixel(request):
    """The open pixel: a 1x1 transparent GIF, never cached (each fetch is an open)."""
    host = web.host_of(request)
    if not await web.db(request, tracking.record_open, host, request.path_params["token"]):
        return _not_found()
    return Response(tracking.PIXEL_GIF, media_type="image/gif", headers=HEADERS)


def register_routes(register) -> None:
    register("/u", [Route("/{token}", page, methods=["GET"]),
                    Route("/{token}", one_click, methods=["POST"]),
                    Route("/{token}/resubscribe", resubscribe, methods=["POST"])], public=True)
    register("/c", [Route("/{token}", click, methods=["GET"])], public=True)
    register("/o", [Route("/{token}", pixel, methods=["GET"])], public=True)
