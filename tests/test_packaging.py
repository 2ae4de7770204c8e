"""What installing Postroom puts into an environment, checked on a real wheel.

The repository root is the package `postroom` (setup.cfg `package_dir = postroom = .`),
so the owner's layout (core/, plugins/, cli.py) must never leak into site-packages as
top-level `core`, `plugins` or `cli`, and every package folder of the tree must be in
setup.cfg's explicit `packages =` list. These tests build the wheel the way a release
would (pip, no network: `wheel` is in the test extra), install it into a fresh venv and
look at what a user of that venv would see.
"""
import configparser
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a build must never see: other builds' leftovers would end up in the wheel.
NOT_SOURCES = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__",
                                     ".pytest_cache", ".hypothesis", "logs", "postroom.db*",
                                     "bench")


def _pip(*args, timeout=300):
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _source_packages() -> set[str]:
    """Every package of the tree: folders under core/ and plugins/ with an __init__.py."""
    found = {"postroom"}
    for top in ("core", "plugins"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            found.add(".".join(("postroom", *rel.parts)))
    return found


def _source_modules() -> set[str]:
    """Every .py file the package is made of, as its path inside the wheel."""
    files = {f"postroom/{p}" for p in ("__init__.py", "cli.py") if (ROOT / p).exists()}
    files |= {f"postroom/{p}" for p in ("testing.py",) if (ROOT / p).exists()}
    for top in ("core", "plugins"):
        for path in (ROOT / top).rglob("*.py"):
            if (path.parent / "__init__.py").exists():
                files.add("postroom/" + path.relative_to(ROOT).as_posix())
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of the current tree, built from a clean copy of it."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES)
    _pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(base / "dist"), str(src))
    [built] = (base / "dist").glob("postroom-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> Path:
    """A new venv with only the wheel installed (--no-deps, --no-index). The
    dependencies (pluggy, peewee, click...) are made importable by a .pth line naming this
    test run's site-packages: a path added that way is not a site dir, so its own .pth
    files (our editable install's finder) are not run and Postroom comes from the wheel."""
    env = _venv_with_dependencies(tmp_path_factory.mktemp("venv") / "env")
    _pip("--python", str(env / "bin" / "python"), "install", "--quiet", "--no-deps", "--no-index", str(wheel))
    return env


def _venv_with_dependencies(env: Path) -> Path:
    venv.create(env, with_pip=False)
    [site] = (env / "lib").glob("python3*/site-packages")
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "pluggy").is_dir())
    (site / "_postroom_test_deps.pth").write_text(deps + "\n")
    return env


def _run(env: Path, *argv, cwd):
    return subprocess.run([str(env / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True,
                          cwd=cwd, timeout=120, env={k: v for k, v in os.environ.items()
                                                     if k not in ("PYTHONPATH", "POSTROOM_CONFIG")})


def test_the_wheel_installs_exactly_one_top_level_name(wheel, fresh_venv):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"postroom"}
    [top_level] = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["postroom"]

    [site] = (fresh_venv / "lib").glob("python3*/site-packages")
    installed = {p.name for p in site.iterdir()} - {"_postroom_test_deps.pth", "__pycache__"}
    assert {n for n in installed if not n.endswith(".dist-info")} == {"postroom"}


def test_core_plugins_and_cli_are_not_importable_next_to_postroom(fresh_venv, tmp_path):
    probe = ("import importlib, sys\n"
             "for name in ('core', 'plugins', 'cli'):\n"
             "    try:\n"
             "        importlib.import_module(name)\n"
             "    except ImportError:\n"
             "        continue\n"
             "    sys.exit(f'{name} is importable')\n"
             "import postroom.cli, postroom.core.host\n"
             "print(postroom.__file__)\n")
    done = _run(fresh_venv, "python", "-c", probe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    assert Path(done.stdout.strip()).is_relative_to(fresh_venv)  # the wheel's copy, not the tree


def test_the_console_script_runs_from_the_wheel(fresh_venv, tmp_path):
    done = _run(fresh_venv, "postroom", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Usage: postroom" in done.stdout


def test_every_package_and_module_of_the_tree_is_in_the_wheel(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {n[: -len("/__init__.py")].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    missing = _source_packages() - packages
    assert not missing, f"add to setup.cfg [options] packages: {sorted(missing)}"
    assert _source_modules() - names == set()
    assert not [n for n in names if n.startswith("postroom/tests/") or n.startswith("postroom/examples/")]


def test_builtin_plugin_entry_points_name_the_postroom_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    [ep_file] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    eps = configparser.ConfigParser()
    eps.read_string(zipfile.ZipFile(wheel).read(ep_file).decode())
    assert dict(eps["postroom.plugins"]) == {
        name: f"postroom.plugins.{name}" for name in ("mail_queue", "mail_marketing", "inbound", "auto_vacuum")}
    assert eps["console_scripts"]["postroom"] == "postroom.cli:main"


def _git(*args, cwd):
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_installing_leaves_the_work_tree_clean(tmp_path):
    """`pip install .` and the editable install `make install` does write build/ and
    postroom.egg-info/ next to the sources; .gitignore must cover all of it."""
    clone = tmp_path / "clone"
    _git("clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone), cwd=tmp_path)
    # The clone has the last commit; bring the working tree's files over it, so the check
    # covers what is about to be committed too.
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for rel in filter(None, listed.split("\0")):
        if (ROOT / rel).is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, clone / rel)
    before = _git("status", "--porcelain", "--untracked-files=all", cwd=clone)

    env = _venv_with_dependencies(tmp_path / "env")  # setuptools too: no build isolation
    for editable in ([], ["-e"]):
        _pip("--python", str(env / "bin" / "python"), "install", "--quiet", "--no-deps",
             "--no-index", "--no-build-isolation", *editable, str(clone))
    assert (clone / "build").exists() or list(clone.glob("*.egg-info"))  # the install did write
    assert _git("status", "--porcelain", "--untracked-files=all", cwd=clone) == before
