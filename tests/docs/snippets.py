"""The code blocks of the Markdown files in docs/, read as an operator copies them."""
import pathlib
import re

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)


def blocks(lang: str, doc: str | None = None) -> list[tuple[str, int, str]]:
    """(file name, line, text) of every ```lang block in docs/*.md (or in `doc` only)."""
    found = []
    for path in sorted(DOCS.glob("*.md")) if doc is None else [DOCS / doc]:
        text = path.read_text(encoding="utf-8")
        for m in _FENCE.finditer(text):
            if m.group(1) == lang:
                found.append((path.name, text.count("\n", 0, m.start()) + 1, m.group(2)))
    return found


def block_after(doc: str, marker: str, lang: str = "") -> str:
    """The first ```lang block after the line containing `marker` in docs/`doc`."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    start = text.index(marker)
    for m in _FENCE.finditer(text, start):
        if m.group(1) == lang:
            return m.group(2)
    raise LookupError(f"no ```{lang} block after {marker!r} in {doc}")
