"""RFC 8058 one-click unsubscribe, through real HTTP requests to the running service: the
headers campaign mail carries, the POST a mailbox provider sends, the page a person sees,
forged tokens, repeats, resubscribing; and transactional mail that carries none of it."""
import re

import pytest

from postroom.core import chatter, records
from postroom.plugins.mail_marketing.models import Contact
from tests.support.http import request, running

from .conftest import drain, make_campaign, make_list

PUBLIC = "https://news.example.com"
ONE_CLICK = b"List-Unsubscribe=One-Click"  # RFC 8058 section 3.2, the whole body
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def campaign_sent(mk, run, sink, tmp_path):
    """A campaign to ann and bob on the list news (ann also on other), sent, and the HTTP
    service running: (host, base URL, {recipient: received mail})."""
    host = mk(public_url=PUBLIC)
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann", "bob@example.org,Bob"])
    make_list(run, host, tmp_path, "other", ["ann@example.org,Ann"])
    run(host, "campaign", "send", make_campaign(run, host, tmp_path, "news", subject="Spring news"))
    drain(host)
    received = {m.rcpt_tos[0]: m for m in sink.wait_for(2)}
    with running(host) as url:
        yield host, url, received


def web_path(mail) -> str:
    """The path of the https link in List-Unsubscribe (served by our service)."""
    link = re.match(r"<([^>]+)>", mail.message["List-Unsubscribe"]).group(1)
    assert link.startswith(PUBLIC + "/u/")
    return link[len(PUBLIC):]


def opted_out():
    return {(c.mailing_list.name, c.email_normalized) for c in Contact.select() if c.opt_out}


def test_campaign_mail_carries_an_https_link_a_mailto_and_list_unsubscribe_post(campaign_sent):
    _, _, received = campaign_sent
    for address, mail in received.items():
        header = mail.message["List-Unsubscribe"]
        match = re.fullmatch(r"<https://news\.example\.com/u/(t\d+-[a-z2-7]+)>, "
                             r"<mailto:unsubscribe\+(t\d+-[a-z2-7]+)@example\.com\?subject=unsubscribe>", header)
        assert match, header
        assert match.group(1) == match.group(2)
        assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert web_path(received["ann@example.org"]) != web_path(received["bob@example.org"])


def test_the_rfc_8058_post_opts_out_at_once(campaign_sent):
    _, url, received = campaign_sent

    resp = request(url, "POST", web_path(received["ann@example.org"]), body=ONE_CLICK, headers=FORM)

    assert resp.status == 200
    # Her on the campaign's list only; bob untouched; the other list untouched.
    assert opted_out() == {("news", "ann@example.org")}


def test_a_get_shows_a_button_and_changes_nothing(campaign_sent):
    _, url, received = campaign_sent
    path = web_path(received["ann@example.org"])

    for _ in range(3):  # a mail scanner following the link, several times
        resp = request(url, "GET", path)
        assert resp.status == 200
    assert "ann@example.org" in resp.text and "Spring news" in resp.text
    assert re.search(r'<form method="post" action="t\d+-[a-z2-7]+">'
                     r'<input type="hidden" name="List-Unsubscribe" value="One-Click">', resp.text)
    assert opted_out() == set()


def test_the_pages_button_unsubscribes_like_a_browser_would(campaign_sent):
    _, url, received = campaign_sent
    path = web_path(received["ann@example.org"])
    page = request(url, "GET", path).text
    action = re.search(r'<form method="post" action="([^"]+)">', page).group(1)

    resp = request(url, "POST", "/u/" + action, body={"List-Unsubscribe": "One-Click"})

    assert resp.status == 200 and "You are unsubscribed" in resp.text
    assert opted_out() == {("news", "ann@example.org")}


@pytest.mark.parametrize("mangle", [
    lambda p: p[:-1] + ("a" if p[-1] != "a" else "b"),    # one character of the signature
    lambda p: p.rsplit("-", 1)[0],                         # signature cut off
    lambda p: re.sub(r"t(\d+)", lambda m: f"t{int(m.group(1)) + 1}", p),  # another trace, old signature
    lambda p: "/u/" + "x" * 300,                           # garbage
])
def test_a_forged_or_mangled_token_is_404_and_changes_nothing(campaign_sent, mangle):
    _, url, received = campaign_sent
    path = mangle(web_path(received["ann@example.org"]))

    assert request(url, "GET", path).status == 404
    assert request(url, "POST", path, body=ONE_CLICK, headers=FORM).status == 404
    assert opted_out() == set()


def test_repeating_the_post_is_harmless(campaign_sent):
    _, url, received = campaign_sent
    path = web_path(received["ann@example.org"])

    answers = [request(url, "POST", path, body=ONE_CLICK, headers=FORM).status for _ in range(3)]

    assert answers == [200, 200, 200]
    assert opted_out() == {("news", "ann@example.org")}
    assert "You are unsubscribed" in request(url, "GET", path).text


def test_a_post_without_the_one_click_body_changes_nothing(campaign_sent):
    _, url, received = campaign_sent

    resp = request(url, "POST", web_path(received["ann@example.org"]), body=b"x=1", headers=FORM)

    assert resp.status == 400
    assert opted_out() == set()


def test_resubscribe_is_offered_and_signed_for_its_own_purpose(campaign_sent):
    _, url, received = campaign_sent
    path = web_path(received["ann@example.org"])
    page = request(url, "POST", path, body=ONE_CLICK, headers=FORM).text
    action = re.search(r'<form method="post" action="([^"]+/resubscribe)">', page).group(1)
    assert action.split("/")[0] != path.split("/")[-1]  # not the unsubscribe token

    # The unsubscribe token does not work as a resubscribe token.
    assert request(url, "POST", f"{path}/resubscribe").status == 404
    assert opted_out() == {("news", "ann@example.org")}

    resp = request(url, "POST", "/u/" + action)

    assert resp.status == 200 and "subscribed again" in resp.text
    assert opted_out() == set()


def test_without_public_url_mail_carries_only_the_mailto(mk, run, sink, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann"])
    run(host, "campaign", "send", make_campaign(run, host, tmp_path, "news"))
    drain(host)
    mail = sink.wait_for(1)[0].message

    assert mail["List-Unsubscribe"].startswith("<mailto:unsubscribe+t")
    assert "," not in mail["List-Unsubscribe"]
    assert mail["List-Unsubscribe-Post"] is None


def test_transactional_mail_carries_no_list_unsubscribe_post(mk, sink):
    host = mk(public_url=PUBLIC)
    records.ensure_admin(host, "admin@example.com")
    record = records.create_record(host, "generic", "Order 12")
    records.follow(host, record, records.create_partner(host, "Ann", "ann@example.org"))

    chatter.post_message(host, record, "Your order has shipped.")
    mail = sink.wait_for(1)[0].message

    assert mail["List-Unsubscribe-Post"] is None
    assert "Your order has shipped." in mail.get_body(preferencelist=("plain",)).get_content()


@pytest.mark.parametrize("config, status, words", [
    ({}, "warn", "public_url is not set"),
    ({"public_url": "http://news.example.com"}, "warn", "is not https"),
    ({"public_url": PUBLIC}, "ok", "one-click unsubscribe links to https://news.example.com/u/"),
])
def test_doctor_says_whether_campaign_mail_can_offer_one_click(mk, cli_run, config, status, words):
    import json
    data = json.loads(cli_run(mk(**config), "doctor", "--json").output)
    [check] = [c for c in data["checks"] if c["name"] == "campaigns.one_click"]
    assert check["status"] == status and words in check["finding"]
