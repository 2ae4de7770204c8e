"""Lists, the CSV import (streamed, line-numbered bad rows, all-or-nothing on unreadable
files), opt-outs and the blacklist, through the real CLI."""
import json

import pytest

from postroom.plugins.mail_marketing.models import Contact

from .conftest import last_word, write_csv


def _show(run, host, name):
    return json.loads(run(host, "list", "show", name, "--json").output)


def test_import_keeps_good_rows_and_reports_bad_ones_with_their_line_numbers(mk, run, tmp_path):
    host = mk()
    run(host, "list", "create", "news")
    path = write_csv(tmp_path, "c.csv", [
        "ann@example.org,Ann",          # line 2
        "not-an-email,Bob",             # line 3: invalid
        ",Carl",                        # line 4: missing
        "dan@example.org,Dan,extra",    # line 5: too many fields
        "Eve@Example.ORG,Eve",          # line 6
        "eve@example.org,Eve again",    # line 7: duplicate of line 6 once normalised
    ])
    result = run(host, "list", "import", "news", path)
    assert "line 3: not a valid email address" in result.stderr
    assert "line 4: email is missing" in result.stderr
    assert "line 5: expected 2 fields" in result.stderr
    assert "imported 2, merged 1 duplicates, skipped 3 bad rows" in result.stdout
    data = _show(run, host, "news")
    assert data["contacts"] == 2
    assert [c["email"] for c in data["contacts_shown"]] == ["ann@example.org", "eve@example.org"]


def test_importing_the_same_file_twice_merges_instead_of_duplicating(mk, run, tmp_path):
    host = mk()
    run(host, "list", "create", "news")
    path = write_csv(tmp_path, "c.csv", ["ann@example.org,Ann", "bob@example.org,Bob"])
    run(host, "list", "import", "news", path)
    result = run(host, "list", "import", "news", path)
    assert "imported 0, merged 2" in result.stdout
    assert _show(run, host, "news")["contacts"] == 2


def test_a_bom_and_quoted_fields_are_read_like_a_spreadsheet_wrote_them(mk, run, tmp_path):
    host = mk()
    run(host, "list", "create", "news")
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffEmail,Name\r\n\"ann@example.org\",\"Smith, Ann\"\r\nbob@example.org,\"Bob \"\"B\"\"\"\r\n"
                     .encode("utf-8"))
    run(host, "list", "import", "news", str(path))
    shown = {c["email"]: c["name"] for c in _show(run, host, "news")["contacts_shown"]}
    assert shown == {"ann@example.org": "Smith, Ann", "bob@example.org": 'Bob "B"'}


@pytest.mark.parametrize("content, message", [
    (b"name,mail\nAnn,ann@example.org\n", "no 'email' column"),
    (b"", "the file is empty"),
    (b"email,name\nann@example.org,Ann\nbob@example.org,\xff\xfeBob\n", "line 3 is not valid UTF-8"),
    (b"email,name\nann@example.org,Ann\n\"bob@example.org,Bob\n", "check the quoting"),
    (b'email,name\nann@example.org,Ann\n"bob@example.org"x,Bob\n', "check the quoting"),
])
def test_an_unreadable_file_imports_nothing_and_says_why_in_one_line(mk, run, tmp_path, content, message):
    host = mk()
    run(host, "list", "create", "news")
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    result = run(host, "list", "import", "news", str(path), expect_fail=True)
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert Contact.select().count() == 0


def test_importing_into_an_unknown_list_is_refused(mk, run, tmp_path):
    host = mk()
    result = run(host, "list", "import", "nope", write_csv(tmp_path, "c.csv", ["a@example.org,A"]),
                 expect_fail=True)
    assert "no mailing list 'nope'" in result.stderr


def test_list_names_are_unique_and_not_empty(mk, run):
    host = mk()
    assert last_word(run(host, "list", "create", "news")).isdigit()
    assert "already exists" in run(host, "list", "create", "news", expect_fail=True).stderr
    assert "empty" in run(host, "list", "create", "  ", expect_fail=True).stderr


def test_an_opted_out_contact_stays_opted_out_when_imported_again(mk, run, tmp_path):
    host = mk()
    run(host, "list", "create", "news")
    path = write_csv(tmp_path, "c.csv", ["ann@example.org,Ann"])
    run(host, "list", "import", "news", path)
    assert "opted out of news" in run(host, "list", "optout", "news", "ANN@example.org").output
    assert "already" in run(host, "list", "optout", "news", "ann@example.org").output
    run(host, "list", "import", "news", path)
    data = _show(run, host, "news")
    assert data["opted_out"] == 1 and data["contacts_shown"][0]["opted_out"] is True
    assert "is not on the list" in run(host, "list", "optout", "news", "zed@example.org", expect_fail=True).stderr


def test_blacklist_add_list_remove(mk, run, tmp_path):
    host = mk()
    run(host, "list", "create", "news")
    run(host, "list", "import", "news", write_csv(tmp_path, "c.csv", ["ann@example.org,Ann"]))
    assert "blacklisted" in run(host, "blacklist", "add", "Ann@Example.org", "--reason", "asked by phone").output
    assert "already" in run(host, "blacklist", "add", "ann@example.org").output
    rows = json.loads(run(host, "blacklist", "list", "--json").output)
    assert [(r["email"], r["reason"]) for r in rows] == [("ann@example.org", "asked by phone")]
    assert _show(run, host, "news")["blacklisted"] == 1
    run(host, "blacklist", "remove", "ann@example.org")
    assert json.loads(run(host, "blacklist", "list", "--json").output) == []
    assert "not on the blacklist" in run(host, "blacklist", "remove", "ann@example.org", expect_fail=True).stderr
    assert "not a valid email" in run(host, "blacklist", "add", "nope", expect_fail=True).stderr


def test_import_statements_do_not_grow_with_the_file(mk, tmp_path):
    from postroom.plugins.mail_marketing import lists
    host = mk()
    from postroom.core.db import CHUNK
    for name in "abc":
        lists.create_list(host, name)

    def count(n, name):
        path = write_csv(tmp_path, f"{name}.csv", [f"u{i}@example.org,U{i}" for i in range(n)])
        before = host.statements()
        with open(path, "rb") as fh:
            lists.import_contacts(host, name, fh)
        return host.statements() - before
    small = count(50, "a")
    assert count(CHUNK, "b") == small               # one multi-row INSERT per CHUNK rows
    assert count(2 * CHUNK + 1, "c") == small + 2


def test_semicolon_files_and_files_with_only_an_email_column_are_read(mk, run, tmp_path):
    host = mk()
    run(host, "list", "create", "news")
    semi = tmp_path / "semi.csv"
    semi.write_text("name;email\nSmith, Ann;ann@example.org\n", encoding="utf-8")
    only = tmp_path / "only.csv"
    only.write_text("Email\nbob@example.org\n", encoding="utf-8")
    run(host, "list", "import", "news", str(semi))
    run(host, "list", "import", "news", str(only))
    shown = {c["email"]: c["name"] for c in _show(run, host, "news")["contacts_shown"]}
    assert shown == {"ann@example.org": "Smith, Ann", "bob@example.org": ""}


def test_an_import_past_one_chunk_merges_repeats_and_known_contacts_on_either_engine(mk, db_url):
    import io

    from postroom.core.db import CHUNK
    from postroom.plugins.mail_marketing import lists
    host = mk(db_url=db_url)
    lists.create_list(host, "big")
    lists.import_contacts(host, "big", io.BytesIO(b"email,name\nc1@example.org,Known\n"))
    lists.opt_out(host, "big", "c1@example.org")
    # Every address twice (once in another case), past one chunk; c1 was on the list.
    lines = [f"c{i}@example.org,Contact {i}" for i in range(CHUNK + 10)]
    lines += [f"C{i}@EXAMPLE.org,Again {i}" for i in range(0, CHUNK + 10, 7)]
    stats = lists.import_contacts(host, "big", io.BytesIO(("email,name\n" + "\n".join(lines)).encode()))
    assert (stats["imported"], stats["bad"]) == (CHUNK + 9, 0)
    assert stats["merged"] == 1 + len(range(0, CHUNK + 10, 7))
    rows = {c.email_normalized: c for c in Contact.select()}
    assert len(rows) == CHUNK + 10
    assert rows["c1@example.org"].name == "Known" and rows["c1@example.org"].opt_out  # left as it was
    assert rows["c7@example.org"].name == "Contact 7" and not rows["c7@example.org"].opt_out
