"""A third-party plugin, loaded the way its users will load it.

`examples/postroom-helpdesk` is pip-installed (a real build, a real .dist-info with its
`postroom.plugins` entry point) into a folder under the test's temp dir, and the real
`postroom` command runs in a subprocess with that folder on PYTHONPATH: nothing is
registered by hand, so the test passes only if entry-point discovery works.
"""
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from postroom.core import plugins as plugin_loader, records
from postroom.core.models import Record

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "postroom-helpdesk"


def _can_build_offline() -> bool:
    """True when this environment can build the example without fetching anything:
    setuptools >= 64 plus a bdist_wheel (the `wheel` package, or setuptools >= 70.1)."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    from importlib.metadata import version
    major, minor = (int(p) for p in version("setuptools").split(".")[:2])
    if (major, minor) < (64, 0):
        return False
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="module")
def helpdesk_site(tmp_path_factory):
    """A folder holding the pip-installed example (package + .dist-info)."""
    base = tmp_path_factory.mktemp("helpdesk")
    src, site = base / "src", base / "site"
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    # With this environment's setuptools the build needs no network; without them pip
    # builds in an isolated env fetched from the package index, as `make install` did.
    isolation = ["--no-build-isolation"] if _can_build_offline() else []
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           *isolation, "--no-deps", "--target", str(site), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"pip could not install the example:\n{done.stdout}\n{done.stderr}"
    assert (site / "postroom_helpdesk-0.1.0.dist-info" / "entry_points.txt").is_file()
    return site


@pytest.fixture
def postroom(helpdesk_site, tmp_path, db_url):
    """postroom(*args) → CompletedProcess of the real `postroom` command, on a fresh
    deployment (SQLite under tmp_path, or PostgreSQL), with the example installed."""
    cfg = tmp_path / "postroom.cfg"
    cfg.write_text(f"[postroom]\ndatabase = {db_url}\nlog_dir = {tmp_path / 'logs'}\n"
                   "domains = example.com\n")
    script = shutil.which("postroom", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-c", "from postroom.cli import main; main()"]
    env = dict(os.environ, POSTROOM_CONFIG=str(cfg),
               PYTHONPATH=os.pathsep.join(filter(None, [str(helpdesk_site), str(ROOT),
                                                        os.environ.get("PYTHONPATH")])))
    env.pop("POSTROOM_DEBUG", None)

    def run(*args, input=None):
        return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120, input=input)

    def start(*args):
        """A long-running command (e.g. `http serve`), its output piped."""
        return subprocess.Popen(command + [str(a) for a in args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    run.start = start
    assert run("init").returncode == 0  # a deployment starts with init (it creates the database)
    return run


def _ok(result):
    assert result.returncode == 0, result.stderr
    return result.stdout


def _error_lines(result):
    assert "Traceback" not in result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def test_helpdesk_is_available_but_inert_until_enabled(postroom):
    rows = json.loads(_ok(postroom("plugins", "list", "--json")))
    helpdesk = next(r for r in rows if r["name"] == "helpdesk")
    assert helpdesk["enabled"] is False
    assert "Helpdesk" in helpdesk["description"]

    refused = postroom("record", "create", "helpdesk.ticket", "Printer on fire")
    assert refused.returncode != 0
    [line] = _error_lines(refused)
    assert line.startswith("Error: unknown record type 'helpdesk.ticket'")
    assert json.loads(_ok(postroom("record", "list", "--json"))) == []  # nothing half-written

    missing = postroom("helpdesk", "tickets")
    assert missing.returncode != 0
    assert _error_lines(missing) == ["Error: 'helpdesk' is a command of the plugin helpdesk, which is "
                                     "not enabled in this deployment (postroom plugins enable helpdesk)"]
    assert "helpdesk" not in _ok(postroom("--help"))


def test_enabled_helpdesk_numbers_tickets_and_lists_them(postroom):
    assert "enabled: helpdesk" in _ok(postroom("plugins", "enable", "helpdesk"))
    rows = json.loads(_ok(postroom("plugins", "list", "--json")))
    assert next(r for r in rows if r["name"] == "helpdesk")["enabled"] is True
    assert "helpdesk.ticket" in _ok(postroom("record", "types"))

    first = _ok(postroom("record", "create", "helpdesk.ticket", "Printer on fire")).split()[-1]
    generic = _ok(postroom("record", "create", "generic", "Not a ticket")).split()[-1]
    second = _ok(postroom("record", "create", "helpdesk.ticket", "VPN drops")).split()[-1]
    for body in ("It smokes", "Still smoking"):
        _ok(postroom("message", "post", "helpdesk.ticket", first, "--body", body))

    # The postroom_record_created hook numbered the tickets, and only the tickets.
    shown = json.loads(_ok(postroom("record", "show", "helpdesk.ticket", first, "--json")))
    assert shown["values"] == {"number": "HD-00001"}
    assert json.loads(_ok(postroom("record", "show", "generic", generic, "--json")))["values"] is None

    tickets = json.loads(_ok(postroom("helpdesk", "tickets", "--json")))
    assert [(t["number"], t["id"], t["name"], t["messages"]) for t in tickets] == [
        ("HD-00001", int(first), "Printer on fire", 2),
        ("HD-00002", int(second), "VPN drops", 0),
    ]
    table = _ok(postroom("helpdesk", "tickets")).splitlines()
    assert table[0].split() == ["NUMBER", "ID", "NAME", "MESSAGES", "CREATED_AT"]
    assert table[1].startswith("HD-00001") and "Printer on fire" in table[1]

    # Disabled again, its command is gone and its tickets are kept.
    _ok(postroom("plugins", "disable", "helpdesk"))
    assert _error_lines(postroom("helpdesk", "tickets")) == [
        "Error: 'helpdesk' is a command of the plugin helpdesk, which is not enabled in this "
        "deployment (postroom plugins enable helpdesk)"]
    _ok(postroom("plugins", "enable", "helpdesk"))
    third = _ok(postroom("record", "create", "helpdesk.ticket", "Mouse")).split()[-1]
    shown = json.loads(_ok(postroom("record", "show", "helpdesk.ticket", third, "--json")))
    assert shown["values"] == {"number": "HD-00003"}


def test_the_helpdesk_examples_own_tests_pass_with_postroom_testing(helpdesk_site, tmp_path):
    """The example's tests/ use only the fixtures `postroom.testing` ships (found through
    its pytest11 entry point, as in a plugin author's venv), in a pytest run of their own."""
    tests = tmp_path / "tests"
    shutil.copytree(EXAMPLE / "tests", tests, ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(helpdesk_site), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed.group(1)) >= 4, done.stdout


def _numbers():
    return sorted(r.values["number"] for r in Record.select().where(Record.model == "helpdesk.ticket"))


def test_the_installed_helpdesk_adds_a_console_screen_behind_the_login(postroom):
    import re
    import signal

    from tests.support.http import ConsoleClient, request
    _ok(postroom("plugins", "enable", "helpdesk"))
    _ok(postroom("record", "create", "helpdesk.ticket", "Printer on fire"))
    _ok(postroom("operator", "add", "ops@example.com", input="a long password\na long password\n"))
    server = postroom.start("http", "serve", "--port", "0")
    try:
        url = re.search(r"listening on (http://\S+) ", server.stderr.readline()).group(1)
        assert request(url, "GET", "/helpdesk/").status == 303  # to the login page
        client = ConsoleClient(url)
        assert client.login("ops@example.com", "a long password").status == 303
        assert 'href="/helpdesk/">Helpdesk</a>' in client.get("/").text
        page = client.get("/helpdesk/").text
        assert "HD-00001" in page and "Printer on fire" in page
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    assert server.returncode == 0


@pytest.fixture
def helpdesk_host(helpdesk_site, make_host, db_url, monkeypatch):
    """A host with the installed example enabled, driven in-process."""
    monkeypatch.syspath_prepend(str(helpdesk_site))
    importlib.invalidate_caches()
    return make_host(db_url=db_url, plugins=["helpdesk"])


def test_concurrent_creations_never_share_a_ticket_number(helpdesk_host):
    host, barrier, errors = helpdesk_host, threading.Barrier(3), []

    def create_tickets(tag):
        try:
            barrier.wait(timeout=30)
            for i in range(8):
                records.create_record(host, "helpdesk.ticket", f"{tag} {i}")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            host.db.close()  # each thread has its own connection (peewee's are per thread)

    workers = [threading.Thread(target=create_tickets, args=(t,)) for t in "abc"]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert errors == []
    assert _numbers() == [f"HD-{n:05d}" for n in range(1, 25)]


def test_a_rolled_back_ticket_gives_its_number_back(helpdesk_host):
    with pytest.raises(RuntimeError):
        with helpdesk_host.transaction():
            records.create_record(helpdesk_host, "helpdesk.ticket", "Never mind")
            raise RuntimeError("the caller changed its mind")
    records.create_record(helpdesk_host, "helpdesk.ticket", "Printer on fire")
    assert _numbers() == ["HD-00001"]


# --- a broken third-party package ---------------------------------------------------

def _fake_distribution(site: Path, dist: str, entry_points: dict, modules: dict):
    """Install a distribution by hand: its modules plus a .dist-info whose entry_points.txt
    is what pip would have written. importlib.metadata reads exactly these files."""
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[postroom.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def broken_site(tmp_path, monkeypatch):
    """Three installed plugin distributions: one good, one that raises on import, one whose
    entry point names a module that does not exist."""
    site = tmp_path / "site"
    _fake_distribution(site, "pr_good", {"good": "pr_good_plugin"}, {"pr_good_plugin": """
        from postroom.core.plugins import PluginInfo
        PLUGIN = PluginInfo("pr_good", "a plugin that loads")
    """})
    _fake_distribution(site, "pr_crashing", {"crashing": "pr_crashing_plugin"}, {"pr_crashing_plugin": """
        raise RuntimeError("this plugin is broken")
    """})
    _fake_distribution(site, "pr_missing", {"missing": "pr_no_such_module"}, {})
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    for name in ("pr_good_plugin", "pr_crashing_plugin"):
        sys.modules.pop(name, None)


def test_discover_logs_and_skips_a_broken_entry_point(broken_site, caplog):
    caplog.set_level("WARNING", logger="postroom.plugins")
    found = plugin_loader.discover()
    assert "pr_good" in found
    assert not {"crashing", "missing"} & set(found)
    warnings = [r.getMessage() for r in caplog.records if r.name == "postroom.plugins"]
    assert any("pr_crashing_plugin" in w and "this plugin is broken" in w for w in warnings)
    assert any("pr_no_such_module" in w for w in warnings)


def test_a_broken_plugin_does_not_take_the_cli_down(broken_site, make_host, cli_run):
    host = make_host()
    result = cli_run(host, "plugins", "list", "--json")
    assert result.exit_code == 0
    assert "pr_good" in [r["name"] for r in json.loads(result.stdout)]
    host.enable_plugin("pr_good")
    assert host.is_enabled("pr_good")


def test_a_broken_plugin_is_reported_to_the_operator(broken_site, make_host, cli_run, tmp_path):
    host = make_host()
    result = cli_run(host, "plugins", "list")
    assert result.exit_code == 0
    assert "pr_crashing_plugin could not be loaded: RuntimeError: this plugin is broken" in result.stderr
    assert "pr_no_such_module" in result.stderr
    assert "this plugin is broken" in (tmp_path / "logs" / "postroom.log").read_text()
