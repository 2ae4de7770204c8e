"""The shape of the code, read from its imports (ast, nothing is imported):

- no import cycle between Postroom's modules, at module level nor through imports inside
  functions (a cycle means one module too few or one too many: move the shared part down);
- a plugin imports only the public surface (`postroom`), the core (`postroom.core...`) and
  its own modules: never `postroom.cli`, never another plugin's modules, not even lazily
  inside a function;
- the core imports no plugin and not the CLI (it finds plugins by entry point).
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_files() -> dict:
    """{module name: path} for everything installed as `postroom`."""
    files = {"postroom": ROOT / "__init__.py"}
    for name in ("cli", "testing"):
        if (ROOT / f"{name}.py").exists():
            files[f"postroom.{name}"] = ROOT / f"{name}.py"
    for top in ("core", "plugins"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if not all((ROOT.joinpath(*parts[:i + 1]) / "__init__.py").exists() for i in range(len(parts) - 1)):
                continue  # not inside a package (e.g. loose fixture files)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(("postroom", *parts))] = path
    return files


MODULES = _module_files()


def _imports(name: str, path: Path, module_level: bool) -> set[str]:
    """Postroom modules that `name` imports (module-level statements only, or anywhere)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    if module_level:
        nodes = []
        stack = list(tree.body)
        while stack:  # module-level code, including inside if/try blocks, not inside defs
            node = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            nodes.append(node)
            stack.extend(ast.iter_child_nodes(node))
    else:
        nodes = list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod.
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == "postroom" or t.startswith("postroom."))
    return found - {name}


def _cycles(graph: dict) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def test_the_walk_sees_every_module_and_real_edges():
    assert {"postroom", "postroom.cli", "postroom.core.host", "postroom.plugins.mail_queue",
            "postroom.plugins.mail_queue.sending"} <= set(MODULES)
    # The walker itself must find what is there, or the tests below pass on nothing.
    assert "postroom.core.api" in _imports("postroom", MODULES["postroom"], module_level=True)
    assert "postroom.core.context" in _imports("postroom.cli", MODULES["postroom.cli"], module_level=True)
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_at_module_level():
    graph = {name: _imports(name, path, module_level=True) for name, path in MODULES.items()}
    assert _cycles(graph) == []


def test_no_import_cycle_even_through_imports_inside_functions():
    # A lazy import only hides a cycle from the interpreter, not from the reader.
    graph = {name: _imports(name, path, module_level=False) for name, path in MODULES.items()}
    assert _cycles(graph) == []


def _plugin_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "plugins" else None


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _plugin_of(m)))
def test_a_plugin_imports_only_the_public_surface_the_core_and_itself(module):
    own = f"postroom.plugins.{_plugin_of(module)}"
    wrong = sorted(t for t in _imports(module, MODULES[module], module_level=False)
                   if not (t == "postroom" or t.startswith("postroom.core") or t == own
                           or t.startswith(own + ".")))
    assert wrong == [], f"{module} imports {wrong}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("postroom.core")))
def test_the_core_imports_no_plugin_and_not_the_cli(module):
    wrong = sorted(t for t in _imports(module, MODULES[module], module_level=False)
                   if t.startswith("postroom.plugins") or t == "postroom.cli")
    assert wrong == [], f"{module} imports {wrong}"


def test_the_package_root_imports_absolutely_because_pytest_loads_it_by_its_path():
    # The repository root is the package `postroom`, so pytest imports its __init__.py as a
    # Package node under a name taken from the clone's folder (e.g. "tmp-ci-run"): a
    # relative import there fails, or loads a second copy of every module.
    import ast
    import pathlib
    root = pathlib.Path(__file__).resolve().parent.parent / "__init__.py"
    relative = [node.lineno for node in ast.walk(ast.parse(root.read_text()))
                if isinstance(node, ast.ImportFrom) and node.level]
    assert relative == [], f"relative imports in __init__.py at lines {relative}"
