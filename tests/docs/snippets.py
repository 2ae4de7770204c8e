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


def section_blocks(doc: str, heading: str, lang: str = "") -> list[str]:
    """The ```lang blocks under the Markdown heading `heading` (up to the next heading)."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    start = text.index("\n" + heading + "\n")
    end = re.compile(r"^#{2,3} ", re.M).search(text, start + len(heading) + 2)
    part = text[start:end.start() if end else len(text)]
    return [m.group(2) for m in _FENCE.finditer(part) if m.group(1) == lang]


def postfix_files(doc: str, heading: str) -> dict[str, str]:
    """{'/etc/postfix/main.cf': text, '/etc/postfix/transport': text, ...}: the Postfix
    snippets of one section, each named by its first line (`# /etc/postfix/NAME`)."""
    files = {}
    for block in section_blocks(doc, heading):
        first = block.splitlines()[0]
        if first.startswith("# /etc/postfix/"):
            files[first[2:].strip()] = files.get(first[2:].strip(), "") + block
    return files


def main_cf_settings(text: str) -> dict[str, str]:
    """main.cf syntax: `key = value`, a line starting with whitespace continues the value,
    `#` lines are comments."""
    settings, key = {}, None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and key:
            settings[key] += " " + line.strip()
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        settings[key] = value.strip()
    return settings


def ini_values(text: str) -> dict[str, str]:
    """The values of an ```ini snippet (a [postroom] fragment), read by Postroom's reader."""
    import tempfile
    from postroom.core.config import Config
    keys = re.findall(r"^(\w+)\s*=", text, re.M)
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "postroom.cfg"
        path.write_text(text if text.lstrip().startswith("[") else "[postroom]\n" + text)
        config = Config.load(str(path))
    return {k: config.get(k) for k in keys}
