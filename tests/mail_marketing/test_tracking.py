"""Open and click tracking, per campaign and off by default, through real HTTP requests to
the running service: rewritten links that redirect only to the campaign's own links, the
open pixel, first open and click on the trace, ratios in `campaign show`."""
import re

import pytest

from postroom.core import tokens
from postroom.plugins.mail_marketing.models import Trace
from tests.support.http import request, running

from .conftest import drain, make_list, show, write_csv

PUBLIC = "https://news.example.com"
BODY = ('<html><body><p>New <a href="https://shop.example.com/spring?utm=mail&amp;id=7">range</a>, '
        'see the <a href=\'https://shop.example.com/sizes\'>sizes</a> and again the '
        '<a href="https://shop.example.com/spring?utm=mail&amp;id=7">range</a>. '
        'Questions: <a href="mailto:help@example.com">write</a>.</p></body></html>')


def create(run, host, tmp_path, *extra):
    body = tmp_path / "body.html"
    body.write_text(BODY, encoding="utf-8")
    result = run(host, "campaign", "create", "--subject", "Spring", "--body-file", str(body),
                 "--list", "news", *extra)
    return int(result.output.split()[-1])


@pytest.fixture
def tracked(mk, run, sink, tmp_path):
    """A campaign tracking opens and clicks, sent to ann and bob, the HTTP service running:
    (host, url, campaign id, {recipient: html body})."""
    host = mk(public_url=PUBLIC)
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann", "bob@example.org,Bob"])
    cid = create(run, host, tmp_path, "--track", "opens,clicks")
    run(host, "campaign", "send", cid)
    drain(host)
    bodies = {m.rcpt_tos[0]: m.message.get_body(preferencelist=("html",)).get_content()
              for m in sink.wait_for(2)}
    with running(host) as url:
        yield host, url, cid, bodies


def tracking_paths(body, kind):
    return [u[len(PUBLIC):] for u in re.findall(rf'["\']({re.escape(PUBLIC)}/{kind}/[^"\']+)["\']', body)]


def test_links_are_rewritten_per_recipient_and_an_open_pixel_is_added(tracked):
    _, _, _, bodies = tracked
    ann, bob = bodies["ann@example.org"], bodies["bob@example.org"]
    assert "https://shop.example.com" not in ann
    assert 'href="mailto:help@example.com"' in ann  # not a web link: left alone
    assert len(tracking_paths(ann, "c")) == 3 and len(tracking_paths(ann, "o")) == 1
    assert set(tracking_paths(ann, "c")).isdisjoint(tracking_paths(bob, "c"))


def test_a_click_redirects_to_the_original_link_and_is_recorded_once(tracked, run, clock):
    host, url, cid, bodies = tracked
    first, sizes, again = tracking_paths(bodies["ann@example.org"], "c")

    resp = request(url, "GET", first)
    assert resp.status == 302
    assert resp.headers["location"] == "https://shop.example.com/spring?utm=mail&id=7"
    assert request(url, "GET", sizes).headers["location"] == "https://shop.example.com/sizes"
    when = Trace.get(Trace.email_normalized == "ann@example.org").clicked_at
    clock.advance(hours=1)
    assert request(url, "GET", again).status == 302

    trace = Trace.get(Trace.email_normalized == "ann@example.org")
    assert trace.clicked_at == when and trace.opened_at == when  # first click; a click is an open
    data = show(run, host, cid)
    assert (data["clicked"], data["clicked_ratio"], data["opened"], data["opened_ratio"]) == (1, 50.0, 1, 50.0)


def test_the_open_pixel_records_the_first_open(tracked, run):
    host, url, cid, bodies = tracked
    pixel = tracking_paths(bodies["bob@example.org"], "o")[0]

    for _ in range(2):
        resp = request(url, "GET", pixel)
        assert resp.status == 200 and resp.headers["content-type"] == "image/gif"
        assert resp.body.startswith(b"GIF89a")

    data = show(run, host, cid)
    assert (data["opened"], data["opened_ratio"], data["clicked"]) == (1, 50.0, 0)
    assert "opened" in run(host, "campaign", "show", cid).output


def test_no_token_redirects_anywhere_but_the_campaigns_own_links(tracked):
    host, url, _, bodies = tracked
    genuine = tracking_paths(bodies["ann@example.org"], "c")[0]
    trace_id = Trace.get(Trace.email_normalized == "ann@example.org").id

    forged = genuine[:-1] + ("a" if genuine[-1] != "a" else "b")
    # A genuinely signed token naming a link the campaign does not have.
    beyond = "/c/" + tokens.sign(host, "mail_marketing.click", f"t{trace_id}l9")
    for path in (forged, beyond, "/c/" + "x" * 200, "/c/https:%2F%2Fevil.example.net"):
        resp = request(url, "GET", path)
        assert resp.status == 404 and "location" not in resp.headers
    assert request(url, "GET", tracking_paths(bodies["ann@example.org"], "o")[0][:-2] + "zz").status == 404
    assert Trace.get(Trace.id == trace_id).clicked_at is None
    # A query string cannot steer the genuine token elsewhere either.
    assert request(url, "GET", genuine + "?url=https://evil.example.net/").headers["location"] == \
        "https://shop.example.com/spring?utm=mail&id=7"


def test_tracking_is_off_by_default(mk, run, sink, tmp_path):
    host = mk(public_url=PUBLIC)
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann"])
    cid = create(run, host, tmp_path)
    run(host, "campaign", "send", cid)
    drain(host)
    body = sink.wait_for(1)[0].message.get_body(preferencelist=("html",)).get_content()

    assert 'href="https://shop.example.com/spring?utm=mail&amp;id=7"' in body
    assert PUBLIC + "/c/" not in body and PUBLIC + "/o/" not in body
    assert "opened" not in run(host, "campaign", "show", cid).output


@pytest.mark.parametrize("config, track, words", [
    ({}, "opens", "--track needs public_url"),
    ({"public_url": PUBLIC}, "opens,views", "--track takes opens and/or clicks, not views"),
])
def test_bad_track_settings_are_one_line(mk, run, tmp_path, config, track, words):
    host = mk(**config)
    run(host, "list", "create", "news")
    run(host, "list", "import", "news", write_csv(tmp_path, "c.csv", ["ann@example.org,Ann"]))

    result = run(host, "campaign", "create", "--subject", "S", "--body-file", str(_body(tmp_path)),
                 "--list", "news", "--track", track, expect_fail=True)

    assert words in result.output and "Traceback" not in result.output


def _body(tmp_path):
    path = tmp_path / "b.html"
    path.write_text(BODY, encoding="utf-8")
    return path
