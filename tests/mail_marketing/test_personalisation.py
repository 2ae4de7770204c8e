"""Campaigns rendered per recipient (sandboxed Jinja2): names, unsubscribe link, plugin
names; refused at create/test when they cannot render; one failing recipient is an error
trace and the others go on."""
from postroom.core.plugins import hookimpl
from postroom.plugins.mail_marketing.models import Campaign, Trace

from .conftest import drain, last_word, make_list, show


class ShopContext:
    @hookimpl(optionalhook=True)
    def postroom_campaign_template_context(self, host, campaign):
        return {"shop": {"name": "ACME Tools"}}


def create(run, host, tmp_path, body, subject="News for {{ contact.name }}", expect_fail=False):
    path = tmp_path / "body.html"
    path.write_text(body, encoding="utf-8")
    result = run(host, "campaign", "create", "--subject", subject, "--body-file", path, "--list", "news",
                 expect_fail=expect_fail)
    return result if expect_fail else last_word(result)


def test_each_recipient_gets_a_subject_and_body_of_their_own(mk, run, sink, tmp_path, db_url):
    host = mk(db_url=db_url, extra=[ShopContext()])
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann <Smith>", "bob@example.org,Bob"])
    cid = create(run, host, tmp_path, "<p>Dear {{ contact.name }} ({{ contact.email }}), {{ shop.name }} "
                                      "says: {{ campaign.subject }}.</p>"
                                      '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>')
    run(host, "campaign", "send", cid)
    drain(host)
    got = {r.rcpt_tos[0]: r.message for r in sink.wait_for(2)}
    ann, bob = got["ann@example.org"], got["bob@example.org"]
    assert ann["Subject"] == "News for Ann <Smith>" and bob["Subject"] == "News for Bob"
    html = ann.get_body(("html",)).get_content()
    # campaign.subject is the subject this recipient got, not the subject's template.
    assert "Dear Ann &lt;Smith&gt; (ann@example.org), ACME Tools says: News for Ann &lt;Smith&gt;." in html
    assert 'href="mailto:unsubscribe+t' in html
    # The link is that recipient's own signed address, the one List-Unsubscribe carries.
    token = ann["List-Unsubscribe"].split("unsubscribe+")[1].split("@")[0]
    assert f"unsubscribe+{token}@" in html
    assert "Dear Bob (bob@example.org), ACME Tools says: News for Bob." in bob.get_body(("plain",)).get_content()


def test_a_subject_that_reads_campaign_subject_is_refused_with_its_line(mk, run, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann"])
    for subject in ("Hi {{ contact.name }}: {{ campaign.subject }}", "{{ campaign['subject'] }}"):
        result = create(run, host, tmp_path, "<p>{{ campaign.subject }}</p>", subject=subject, expect_fail=True)
        assert "template subject, line 1" in result.stderr and "campaign.subject" in result.stderr
    assert Campaign.select().count() == 0


def test_create_refuses_an_unknown_variable_or_a_broken_template_with_its_line(mk, run, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann"])
    result = create(run, host, tmp_path, "<p>Hi</p>\n<p>{{ contact.first_name }}</p>", expect_fail=True)
    assert "line 2" in result.stderr and "first_name" in result.stderr
    result = create(run, host, tmp_path, "<p>{{ customer.name }}</p>", expect_fail=True)
    assert "unknown variable 'customer'" in result.stderr
    result = create(run, host, tmp_path, "ok", subject="{% if %}", expect_fail=True)
    assert "template subject, line 1" in result.stderr
    result = create(run, host, tmp_path, "{{ ''.__class__.__mro__ }}", expect_fail=True)
    assert "unsafe" in result.stderr
    assert Campaign.select().count() == 0


def test_campaign_test_renders_for_the_contact_with_that_address(mk, run, sink, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann", "bob@example.org,Bob"])
    cid = create(run, host, tmp_path, "<p>Dear {{ contact.name }}</p>")
    run(host, "campaign", "test", cid, "--to", "bob@example.org")
    [r] = sink.wait_for(1)
    assert r.message["Subject"] == "News for Bob"
    assert "Dear Bob" in r.message.get_body(("plain",)).get_content()


def test_a_recipient_whose_render_fails_is_an_error_trace_and_the_others_go_on(mk, run, sink, tmp_path):
    host = mk()
    # 100 // (len(name) - 3): fine for "Bob Smith" (checked at create), fails for "Ann".
    make_list(run, host, tmp_path, "news", ["bob@example.org,Bob Smith", "ann@example.org,Ann",
                                            "cid@example.org,Cid Jones"])
    cid = create(run, host, tmp_path, "<p>{{ 100 // (contact.name|length - 3) }}</p>")
    run(host, "campaign", "send", cid)
    drain(host)
    assert sorted(r.rcpt_tos[0] for r in sink.wait_for(2)) == ["bob@example.org", "cid@example.org"]
    failed = Trace.get(Trace.email == "ann@example.org")
    assert (failed.status, failed.failure_type) == ("error", "template")
    assert "template body, line 1" in failed.failure_reason and "division" in failed.failure_reason
    data = show(run, host, cid)
    assert data["state"] == "done" and data["error"] == 1


class CountingContext:
    """Plain data (the shop) and a callable of the plugin's own (a code per call)."""

    def __init__(self):
        self.count, self.codes = 2, 0

    def code(self):
        self.codes += 1
        return f"CODE{self.codes}"

    @hookimpl(optionalhook=True)
    def postroom_campaign_template_context(self, host, campaign):
        return {"shop": {"name": "ACME Tools", "count": self.count}, "code": self.code}


def test_a_subject_the_same_for_everyone_is_rendered_once_and_each_body_is_still_their_own(mk, run, sink,
                                                                                          tmp_path, db_url):
    from postroom.plugins.mail_marketing import rendering
    host = mk(db_url=db_url, extra=[CountingContext()])
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann", "bob@example.org,Bob"])
    cid = create(run, host, tmp_path, "<p>Dear {{ contact.name }}: {{ campaign.subject }}</p>"
                                      '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
                 subject="{{ shop.name|upper }} news, campaign {{ campaign.id }}")
    compiled = rendering.compile_campaign(host, Campaign.get_by_id(int(cid)))
    # Plugin data and the campaign's own id are the same for all: rendered for the batch.
    assert compiled.static_subject == f"ACME TOOLS news, campaign {cid}" and compiled.static_body is None
    run(host, "campaign", "send", cid)
    drain(host)
    got = {r.rcpt_tos[0]: r.message for r in sink.wait_for(2)}
    for address, name in (("ann@example.org", "Ann"), ("bob@example.org", "Bob")):
        message = got[address]
        assert message["Subject"] == f"ACME TOOLS news, campaign {cid}"
        assert f"Dear {name}: ACME TOOLS news, campaign {cid}" in message.get_body(("plain",)).get_content()
        token = message["List-Unsubscribe"].split("unsubscribe+")[1].split("@")[0]
        assert f"unsubscribe+{token}@" in message.get_body(("html",)).get_content()


def test_a_body_the_same_for_everyone_goes_as_one_body_with_its_text_derived(mk, run, sink, tmp_path):
    from postroom.plugins.mail_marketing import rendering
    host = mk(extra=[CountingContext()])
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann", "bob@example.org,Bob"])
    cid = create(run, host, tmp_path, "<p>{{ shop.name }} says {{ campaign.subject }}</p>",
                 subject="{{ shop.name }} news")
    compiled = rendering.compile_campaign(host, Campaign.get_by_id(int(cid)))
    assert (compiled.static_subject, compiled.static_body) == ("ACME Tools news", "<p>ACME Tools says ACME Tools news</p>")
    run(host, "campaign", "send", cid)
    drain(host)
    for r in sink.wait_for(2):
        assert r.message["Subject"] == "ACME Tools news"
        assert "ACME Tools says ACME Tools news" in r.message.get_body(("plain",)).get_content()


def test_a_plugin_value_that_is_not_plain_data_is_read_for_each_recipient(mk, run, sink, tmp_path):
    from postroom.plugins.mail_marketing import rendering
    plugin = CountingContext()
    host = mk(extra=[plugin])
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann", "bob@example.org,Bob", "cid@example.org,Cid"])
    cid = create(run, host, tmp_path, "<p>Hello</p>", subject="Your code {{ code() }}")
    assert rendering.compile_campaign(host, Campaign.get_by_id(int(cid))).static_subject is None
    run(host, "campaign", "send", cid)
    drain(host)
    subjects = [r.message["Subject"] for r in sink.wait_for(3)]
    assert len(set(subjects)) == 3 and all(s.startswith("Your code CODE") for s in subjects)


def test_a_part_the_same_for_everyone_that_fails_at_send_time_fails_each_recipient_with_the_reason(
        mk, run, sink, tmp_path):
    plugin = CountingContext()
    host = mk(extra=[plugin])
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann", "bob@example.org,Bob"])
    cid = create(run, host, tmp_path, "<p>Dear {{ contact.name }}</p>", subject="{{ 100 // shop.count }} deals")
    plugin.count = 0  # the plugin's data changed since the campaign was checked
    run(host, "campaign", "send", cid)
    drain(host)
    traces = list(Trace.select().order_by(Trace.id))
    assert [(t.status, t.failure_type) for t in traces] == [("error", "template")] * 2
    assert all("template subject, line 1" in t.failure_reason and "division" in t.failure_reason for t in traces)
    assert sink.messages == [] and show(run, host, cid)["state"] == "done"


def test_a_variable_set_in_the_subject_does_not_reach_the_body(mk, run, sink, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann"])
    cid = create(run, host, tmp_path, '<p>{{ contact.name }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
                 subject="{% set unsubscribe_url = 'https://evil.example/' %}News for {{ contact.name }}")
    run(host, "campaign", "send", cid)
    drain(host)
    [r] = sink.wait_for(1)
    html = r.message.get_body(("html",)).get_content()
    assert r.message["Subject"] == "News for Ann"
    assert "evil.example" not in html and 'href="mailto:unsubscribe+t' in html


def test_each_recipient_s_text_part_carries_their_name_and_keeps_the_links(mk, run, sink, tmp_path, db_url):
    host = mk(db_url=db_url, extra=[ShopContext()])
    make_list(run, host, tmp_path, "news", ["ann@example.org,Ann <Smith> & Co", "bob@example.org,Bob"])
    cid = create(run, host, tmp_path,
                 "<h1>{{ campaign.subject }}</h1><p>Hello {{ contact.name }}, from {{ shop.name }}.</p>"
                 '<p>See <a href="https://shop.example/offers?for={{ contact.email }}">our offers</a>, '
                 "{{ contact.name|upper }}.</p>"
                 '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>')
    run(host, "campaign", "send", cid)
    drain(host)
    got = {r.rcpt_tos[0]: r.message for r in sink.wait_for(2)}
    for address, name in (("ann@example.org", "Ann <Smith> & Co"), ("bob@example.org", "Bob")):
        message = got[address]
        token = message["List-Unsubscribe"].split("unsubscribe+")[1].split("@")[0]
        text = message.get_body(("plain",)).get_content()
        assert f"News for {name}" in text and f"Hello {name}, from ACME Tools." in text
        assert f"our offers <https://shop.example/offers?for={address}>, {name.upper()}." in text
        assert f"Unsubscribe <mailto:unsubscribe+{token}@" in text
        html = message.get_body(("html",)).get_content()
        def escaped(text):
            return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert f"Hello {escaped(name)}, from ACME Tools." in html and f"{escaped(name.upper())}." in html
        assert f'href="https://shop.example/offers?for={address}"' in html
        assert f'href="mailto:unsubscribe+{token}@' in html
