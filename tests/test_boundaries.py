"""The package's layering, read from its source with ``ast``.

- The core (``harness/``) never imports the built-in plugins (``harness.methods``,
  ``harness.datasets``), at module level or inside a function, except
  ``harness/builtin_plugins.py``, which registers them as a third party would be.
- No import cycle among the package's modules, counting the imports that run when a module is
  imported (module level, ``try``/``if`` blocks included, ``if TYPE_CHECKING:`` blocks
  excluded); an import inside a function runs when it is called, after every module has
  loaded, and is the documented way to import heavy or plugin code lazily.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: package folder -> its import name (pyproject's package-dir)
FOLDERS = {"harness": "harness", "methods": "harness.methods", "datasets": "harness.datasets"}
PLUGIN_PACKAGES = ("harness.methods", "harness.datasets")
ALLOWED = {"harness.builtin_plugins"}


def _modules() -> dict[str, Path]:
    """Every module of the distribution: import name -> file."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path, import_time_only: bool) -> list[tuple[str, int]]:
    """``(imported module, line)`` for each import in ``path``: the deepest module of this
    distribution it names (``from harness import distributed`` is ``harness.distributed``), or
    the name itself for anything outside it. ``importlib.import_module("...")`` with a literal
    counts as an import."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if import_time_only and (in_function or (isinstance(node, ast.If) and _is_type_checking(node))):
            return
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                child = f"{base}.{alias.name}"
                out.append((child if child in MODULES else base, node.lineno))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append((node.args[0].value, node.lineno))
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, False)
    return out


def test_the_module_map_covers_the_package():
    assert {"harness.api", "harness.registry", "harness.builtin_plugins", "harness.methods.tokencut",
            "harness.datasets.synthetic"} <= set(MODULES)


def test_the_core_imports_no_builtin_plugin_except_the_registration_module():
    offenders = []
    for module, path in MODULES.items():
        if module.startswith(PLUGIN_PACKAGES) or module in ALLOWED:
            continue
        for imported, line in _imports(module, path, import_time_only=False):
            if imported in PLUGIN_PACKAGES or imported.startswith(tuple(p + "." for p in PLUGIN_PACKAGES)):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert offenders == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
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
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_packages_modules():
    graph = {module: {imported for imported, _ in _imports(module, path, import_time_only=True)
                      if imported in MODULES and imported != module}
             for module, path in MODULES.items()}
    assert _cycles(graph) == []
