"""examples/starlette-app, the README's "Use from Python" example, run the way it is
deployed: uvicorn in its own process on a free loopback port, driven over real HTTP
(urllib), mailing the record's followers through a real SMTP server on loopback."""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import postroom
from postroom.core.models import Message
from postroom.testing import free_port

APP_DIR = Path(__file__).resolve().parents[1] / "examples" / "starlette-app"


@pytest.fixture
def deployment(postroom_make_host, postroom_smtp, tmp_path):
    """A deployment with mail_queue, a ticket and one follower; its config file is what the
    app is started with."""
    host = postroom_make_host(plugins=["mail_queue"], smtp=postroom_smtp,
                              config={"mail_from": "desk@example.com"})
    record = postroom.create_record(host, "generic", "Printer on fire")
    postroom.create_partner(host, "Ann", "ann@example.org")
    postroom.follow(host, record, "ann@example.org")
    return host, record, tmp_path / "postroom.cfg"


@pytest.fixture
def app_url(deployment, tmp_path):
    _, _, config = deployment
    port = free_port()
    env = dict(os.environ, POSTROOM_CONFIG=str(config))
    log = open(tmp_path / "uvicorn.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "app:create_app",
                             "--app-dir", str(APP_DIR), "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=2)
            except urllib.error.HTTPError:
                break  # it answers (404 for /): started
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"uvicorn did not start:\n{log.read()}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _post(url, payload: bytes, content_type="application/json"):
    request = urllib.request.Request(url, data=payload, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_comment_posted_over_http_lands_on_the_chatter_and_mails_the_follower(app_url, deployment,
                                                                                 postroom_smtp):
    host, record, _ = deployment
    status, answer = _post(f"{app_url}/records/generic/{record.id}/messages",
                           json.dumps({"body": "A technician is on the way", "subject": "Printer",
                                       "author": "desk@example.com"}).encode())
    assert status == 201, answer
    stored = Message.get_by_id(answer["id"])
    assert (stored.record_id, stored.subject, stored.message_id) == (record.id, "Printer",
                                                                   answer["message_id"])
    [mail] = postroom_smtp.wait_for(1)
    assert mail.rcpt_tos == ["ann@example.org"]
    assert mail.message["Message-Id"] == answer["message_id"]


def test_bad_requests_get_a_clear_answer_and_write_nothing(app_url, deployment):
    host, record, _ = deployment
    base = f"{app_url}/records/generic"
    assert _post(f"{base}/{record.id + 100}/messages", b'{"body": "x"}') == (
        404, {"error": f"no generic record with id {record.id + 100}"})
    assert _post(f"{app_url}/records/nosuch.type/{record.id}/messages", b'{"body": "x"}')[0] == 404
    assert _post(f"{base}/{record.id}/messages", b"not json")[0] == 400
    assert _post(f"{base}/{record.id}/messages", b'["a list"]')[0] == 400
    assert _post(f"{base}/{record.id}/messages", b'{"body": ""}')[0] == 400
    assert _post(f"{base}/{record.id}/messages", b'{"body": "x", "subject": "two\\nlines"}')[0] == 400
    status, answer = _post(f"{base}/{record.id}/messages", json.dumps({"body": "x" * 70_000}).encode())
    assert status == 413 and "at most" in answer["error"]
    assert Message.select().count() == 0
