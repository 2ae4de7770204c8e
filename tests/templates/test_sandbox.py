"""Operators' templates are not trusted code: the sandbox refuses hostile ones, each with
one clear reason, and renders honest ones with autoescape."""
import time

import pytest

from postroom.core import templates
from postroom.core.templates import TemplateFailure

CONTEXT = {"contact": {"name": "Ann <Smith>", "email": "ann@example.org"}, "campaign": {"subject": "News"}}


@pytest.fixture
def host(make_host):
    return make_host(config={"template_render_seconds": "0.5", "template_max_output": "100000"})


def render(host, source, html=True):
    return templates.render_source(host, source, CONTEXT, "body", html=html)


def test_a_template_renders_the_context_with_autoescape_for_html(host):
    assert render(host, "<p>Dear {{ contact.name }}</p>") == "<p>Dear Ann &lt;Smith&gt;</p>"
    assert render(host, "Dear {{ contact.name }}", html=False) == "Dear Ann <Smith>"
    assert render(host, "{{ contact.name|upper }} {% for i in range(3) %}{{ i }}{% endfor %}") == (
        "ANN &lt;SMITH&gt; 012")


@pytest.mark.parametrize("source,says", [
    ("{{ ''.__class__.__mro__ }}", "unsafe"),
    ("{{ contact.__class__ }}", "unsafe"),
    ("{{ contact.items() }}", "unsafe"),
    ("{{ contact.name.format(1) }}", "unsafe"),
    ("{{ cycler.__init__.__globals__ }}", "unknown variable 'cycler'"),
    ("{% include '/etc/passwd' %}", "no loader"),
    ("{% import 'os' as os %}", "no loader"),
    ("{{ 'x' * 1000000000 }}", "exceed"),
    ("{{ 'x'|center(1000000000) }}", "No filter named 'center'"),
    ("{{ 9 ** 999999 }}", "exponent too large"),
    ("{% for i in range(10000) %}{{ 'abcdefghijklmnopqrstuvwxyz' }}{% endfor %}", "output larger"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursion"),
])
def test_hostile_templates_are_refused_with_a_reason(host, source, says):
    with pytest.raises(TemplateFailure) as refused:
        render(host, source)
    assert says in str(refused.value)


def test_a_template_that_loops_for_ever_is_stopped_by_the_time_limit(host):
    started = time.monotonic()
    with pytest.raises(TemplateFailure) as refused:
        render(host, "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    assert "took longer than 0.5 s" in str(refused.value)
    assert time.monotonic() - started < 5
    assert render(host, "{{ contact.email }}") == "ann@example.org"  # the next render is fine


def test_unknown_variables_and_syntax_errors_name_their_line(host):
    with pytest.raises(TemplateFailure, match=r"body, line 2: unknown variable 'first_name'"):
        render(host, "Hello\n{{ first_name }}")
    with pytest.raises(TemplateFailure, match=r"body, line 3: .*'phone'"):
        render(host, "a\nb\n{{ contact.phone }}")
    with pytest.raises(TemplateFailure, match=r"body, line 2"):
        render(host, "ok\n{% if %}")


def test_a_template_compiled_under_one_output_limit_is_not_reused_under_another(make_host):
    roomy = make_host(config={"template_max_output": "100000"})
    tight = make_host(config={"template_max_output": "1000"})
    source = "{{ 'x' * 2000 }}"
    assert templates.render_source(roomy, source, CONTEXT, "body") == "x" * 2000
    with pytest.raises(TemplateFailure, match="exceed 1000"):
        templates.render_source(tight, source, CONTEXT, "body")
    assert templates.render_source(roomy, source, CONTEXT, "body") == "x" * 2000


def test_one_namespace_serves_several_renders_and_no_template_writes_to_it(host):
    renderer = templates.Renderer(host, {"shop": {"name": "ACME"}})
    first = templates.compile_template(host, "{% set shop = 'evil' %}{{ shop }} {{ contact.name }}", "subject",
                                       html=False)
    second = templates.compile_template(host, "<p>{{ shop.name }} for {{ contact.name }}</p>", "body")
    namespace = renderer.namespace(contact={"name": "Ann <Smith>"})
    assert renderer.render(first, namespace, "subject") == "evil Ann <Smith>"
    assert renderer.render(second, namespace, "body") == "<p>ACME for Ann &lt;Smith&gt;</p>"
    assert namespace["shop"] == {"name": "ACME"} and renderer.shared["shop"] == {"name": "ACME"}


@pytest.mark.parametrize("source,says", [
    ("{{ ''.__class__.__mro__ }}", "unsafe"),
    ("{% for i in range(10000) %}{{ 'abcdefghijklmnopqrstuvwxyz' }}{% endfor %}", "output larger"),
    ("a\n{{ contact.phone }}", "body, line 2"),
])
def test_a_renderer_refuses_what_render_refuses(host, source, says):
    renderer = templates.Renderer(host)
    with pytest.raises(TemplateFailure) as refused:
        renderer.render(templates.compile_template(host, source, "body"), renderer.namespace(**CONTEXT), "body")
    assert says in str(refused.value)


def test_a_renderer_stops_a_template_that_loops_for_ever(host):
    renderer = templates.Renderer(host)
    looping = templates.compile_template(host, "{% for i in range(100000) %}{% for j in range(100000) %}"
                                               "{% endfor %}{% endfor %}", "body")
    started = time.monotonic()
    with pytest.raises(TemplateFailure, match="took longer than 0.5 s"):
        renderer.render(looping, renderer.namespace(**CONTEXT), "body")
    assert time.monotonic() - started < 5
    assert renderer.render(templates.compile_template(host, "{{ contact.email }}", "body"),
                           renderer.namespace(**CONTEXT), "body") == "ann@example.org"


MERGE_VALUES = {"contact": {"name": "Ann <Smith> & \"Co\" 'x'", "email": "ann@example.org"},
                "campaign": {"subject": "Ünïcode news", "id": 42},
                "shop": {"address": {"city": "Zürich"}, "tags": ["a", "b"], "open": True, "owner": None,
                         "rating": 4.5},
                "unsubscribe_url": "https://example.com/u/t1-abc?x=1&y=2"}


@pytest.mark.parametrize("source", [
    "<p>Dear {{ contact.name }} ({{ contact.email }})</p>",
    "{{ campaign.subject }} #{{ campaign.id }}\n",
    '<a href="{{ unsubscribe_url }}">Unsubscribe</a> from {{ shop.address.city }}',
    "  {{- contact.name -}}  \n{# a comment #}{% raw %}{{ not a name }}{% endraw %}\n\n",
    "{{ shop.tags }} {{ shop.open }} {{ shop.owner }} {{ shop.rating }}",  # not str/int: Jinja2's own
    "plain text, no names",
    "",
])
@pytest.mark.parametrize("html", [True, False])
def test_a_mail_merge_template_renders_exactly_what_jinja_renders(host, source, html):
    renderer = templates.Renderer(host)
    template = templates.compile_template(host, source, "body", html=html)
    namespace = renderer.namespace(**MERGE_VALUES)
    assert renderer.render(template, namespace, "body") == template.render(namespace)


def test_a_mail_merge_template_is_joined_without_jinja_and_refuses_what_jinja_refuses(host):
    merge = templates.compile_template(host, "Hi {{ contact.name }}\n{{ contact.phone }}", "body")
    assert merge.postroom_plan is not None
    assert templates.compile_template(host, "{{ contact.name|upper }}", "body").postroom_plan is None
    assert templates.compile_template(host, "{% if 1 %}x{% endif %}", "body").postroom_plan is None
    renderer = templates.Renderer(host)
    with pytest.raises(TemplateFailure, match=r"body, line 2: .*'phone'"):
        renderer.render(merge, renderer.namespace(**CONTEXT), "body")
    # Attribute access stays refused as the sandbox refuses it, a key of that name aside.
    unsafe = templates.compile_template(host, "{{ contact.__class__ }}", "body")
    with pytest.raises(TemplateFailure, match="unsafe"):
        renderer.render(unsafe, renderer.namespace(**CONTEXT), "body")
    big = templates.compile_template(host, "{{ contact.name }}{{ contact.name }}", "body")
    with pytest.raises(TemplateFailure, match="output larger than 100000"):
        renderer.render(big, renderer.namespace(contact={"name": "x" * 60000}), "body")
