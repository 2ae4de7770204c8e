"""A tiny web application that embeds Postroom through its Python API.

    POSTROOM_CONFIG=/path/to/postroom.cfg uvicorn --factory app:create_app

`POST /records/{model}/{id}/messages` with a JSON body `{"body": "...", "subject": "...",
"author": "ann@example.org"}` posts on that record's chatter; the record's followers are
notified (by mail when mail_queue is enabled). The app opens one host when it starts and
closes it when it stops; Postroom's calls block (database, SMTP), so they run on Starlette's
worker threads, never on the event loop.
"""
import json
import os
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.routing import Route

import postroom

MAX_BODY = 64 * 1024  # bytes of JSON accepted per request
MAX_TEXT = 20_000     # characters of a message body


def post_comment(host, model, record_id, body, subject=None, author=None) -> dict:
    """The handler's work, on a worker thread: one transaction; the followers' mail goes
    out after the commit, in the background (offloading), so the answer does not wait on
    the SMTP server."""
    with host.offloading():
        record = postroom.get_record(host, model, record_id)
        message = postroom.post_message(host, record, body, subject=subject, author=author)
    return {"id": message.id, "message_id": message.message_id}


def _error(status, text):
    return JSONResponse({"error": text}, status_code=status)


async def _json_object(request):
    declared = request.headers.get("content-length", "")
    if not declared.isdigit() or int(declared) > MAX_BODY:
        return None, _error(413 if declared.isdigit() else 411, f"send at most {MAX_BODY} bytes of JSON")
    raw = await request.body()
    try:
        data = json.loads(raw[:MAX_BODY])
    except (ValueError, UnicodeDecodeError):
        return None, _error(400, "the body must be a JSON object")
    if not isinstance(data, dict):
        return None, _error(400, "the body must be a JSON object")
    return data, None


async def create_message(request):
    data, refused = await _json_object(request)
    if refused:
        return refused
    body, subject, author = data.get("body"), data.get("subject"), data.get("author")
    if not isinstance(body, str) or not body.strip() or len(body) > MAX_TEXT:
        return _error(400, f"'body' must be a non-empty string of at most {MAX_TEXT} characters")
    if any(v is not None and not isinstance(v, str) for v in (subject, author)):
        return _error(400, "'subject' and 'author' must be strings")
    try:
        result = await run_in_threadpool(post_comment, request.app.state.host,
                                         request.path_params["model"], request.path_params["id"],
                                         body, subject=subject, author=author)
    except postroom.NotFound as exc:
        return _error(404, str(exc))
    except postroom.InvalidInput as exc:
        return _error(400, str(exc))
    except postroom.DatabaseUnavailable as exc:
        return _error(503, str(exc))
    return JSONResponse(result, status_code=201)


def create_app(config=None) -> Starlette:
    """The ASGI app for the deployment `config` (a postroom.cfg path or a mapping of its
    keys; default `$POSTROOM_CONFIG`)."""
    config = config or os.environ.get("POSTROOM_CONFIG") or "postroom.cfg"

    @asynccontextmanager
    async def lifespan(app):
        app.state.host = await run_in_threadpool(postroom.open_host, config)  # once per process
        try:
            yield
        finally:
            await run_in_threadpool(app.state.host.close)  # waits for mail still being sent

    return Starlette(routes=[Route("/records/{model}/{id:int}/messages", create_message, methods=["POST"])],
                     lifespan=lifespan)
