"""The package's layout shows the data flow: the top-level folders are the known ones, no module imports another in a
cycle when the package loads, and the model core, the engine and the offline pipeline never reach into the apps."""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import videollm_online

PACKAGE = "videollm_online"
ROOT = Path(videollm_online.__file__).parent
FOLDERS = {"core", "engine", "video", "data", "train", "eval", "apps", "utils", "assets"}
BELOW_APPS = ("core", "engine", "video", "data", "train", "eval", "utils")
"""The layers that serve the applications and so must not import them."""
KNOWN_APPS_IMPORTS: set[tuple[str, str]] = set()
"""(importer, imported) edges from below into apps/ allowed for now: none."""


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name, with its source file."""
    modules = {PACKAGE: ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(ROOT)], prefix=f"{PACKAGE}."):
        spec = info.module_finder.find_spec(info.name.rsplit(".", 1)[-1])
        modules[info.name] = Path(spec.origin)
    return modules


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """The package modules `name` imports, each with whether the import runs when the module loads (True) or
    only when a function runs (False). `from a import b` names the submodule a.b when there is one. Imports under
    `if TYPE_CHECKING:` never run and are left out."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, at_load: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, at_load)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, at_load) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    module = f"{base}.{child.module}" if child.module else base
                else:
                    module = child.module or ""
                for alias in child.names:
                    submodule = f"{module}.{alias.name}"
                    found.append((submodule if submodule in MODULES else module, at_load))
            inside_function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, at_load and not inside_function)

    visit(ast.parse(path.read_text(), str(path)), True)
    return [(target, at_load) for target, at_load in found if target in MODULES and target != name]


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One cycle of the graph as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in graph.get(node, ()):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := walk(target)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)) is not None:
            return found
    return None


def test_the_walk_sees_the_whole_package():
    assert len(MODULES) > 50
    assert {"videollm_online.engine.session", "videollm_online.data.world.render"} <= set(MODULES)
    session_imports = {target for target, _ in IMPORTS["videollm_online.engine.session"]}
    assert "videollm_online.engine.backend" in session_imports  # `from .backend import ...`, resolved
    assert _cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert _cycle({"a": ["b"], "b": []}) is None


def test_no_import_cycle_when_the_package_loads():
    graph = {name: sorted({target for target, at_load in imports if at_load}) for name, imports in IMPORTS.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle at module level: " + " -> ".join(cycle)


def test_the_top_level_holds_the_known_folders_and_no_loose_modules():
    folders = {path.name for path in ROOT.iterdir() if path.is_dir() and path.name != "__pycache__"}
    assert folders == FOLDERS
    loose = {path.name for path in ROOT.glob("*.py")} - {"__init__.py", "__main__.py"}
    assert not loose, f"modules at the package root: {sorted(loose)}"


def test_the_core_the_engine_and_the_offline_pipeline_never_import_the_apps():
    below = (f"{PACKAGE}.{folder}" for folder in BELOW_APPS)
    prefixes = tuple(f"{prefix}." for prefix in below)
    found = {
        (name, target)
        for name, imports in IMPORTS.items()
        if name.startswith(prefixes)
        for target, _ in imports
        if target.startswith(f"{PACKAGE}.apps")
    }
    wrong = sorted(found - KNOWN_APPS_IMPORTS)
    assert not wrong, "imports of apps/ from below it: " + ", ".join(f"{a} -> {b}" for a, b in wrong)
    gone = sorted(KNOWN_APPS_IMPORTS - found)
    assert not gone, f"known exceptions that no longer exist, to take out of KNOWN_APPS_IMPORTS: {gone}"
