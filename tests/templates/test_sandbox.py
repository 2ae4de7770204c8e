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
