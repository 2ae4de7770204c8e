"""Every ```ini snippet in docs/ loads as written, with the values an operator means."""
import pytest

from postroom.core.config import Config
from tests.docs.snippets import blocks

INI = blocks("ini")

# Keys read as booleans / whole numbers somewhere in Postroom: a stray comment in one of
# them is what made `serve` refuse to start.
BOOLEAN_SUFFIXES = ("_lmtp", "_tls", "_starttls", "_ssl")
NUMERIC_SUFFIXES = ("_port", "_limit", "_seconds", "_minutes", "_days", "_size", "_workers",
                    "_max", "_budget", "_recipients")


def _as_config(tmp_path, text):
    if not text.lstrip().startswith("["):
        text = "[postroom]\n" + text  # a fragment of postroom.cfg
    path = tmp_path / "postroom.cfg"
    path.write_text(text, encoding="utf-8")
    return Config.load(str(path))


def test_the_docs_have_ini_snippets():
    assert len(INI) >= 3, INI


@pytest.mark.parametrize("where,text", [(f"{n}:{line}", t) for n, line, t in INI])
def test_a_docs_snippet_loads_without_its_comments(tmp_path, where, text):
    config = _as_config(tmp_path, text)
    for raw in text.splitlines():
        if "=" not in raw or raw.lstrip().startswith((";", "#", "[")):
            continue
        key = raw.split("=", 1)[0].strip().lower()
        value = config.get(key)
        assert value is not None, (where, key)
        assert ";" not in value and " #" not in value, f"{where}: {key} = {value!r}"
        if key.endswith(BOOLEAN_SUFFIXES):
            config.getbool(key)
        if key.endswith(NUMERIC_SUFFIXES):
            assert config.getfloat(key) is not None


def test_a_trailing_comment_is_dropped_but_a_semicolon_inside_a_value_is_kept(tmp_path):
    config = _as_config(tmp_path, "smtp_port = 25        ; the relay\n"
                                  "inbound_lmtp = true  # speak LMTP\n"
                                  "smtp_password = pa;ss#word\n")
    assert config.getint("smtp_port") == 25
    assert config.getbool("inbound_lmtp") is True
    assert config.get("smtp_password") == "pa;ss#word"

