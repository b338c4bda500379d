"""The shape of the house: no import cycle in `qexec/`, no overlong function, each step's module where the map says."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "qexec"
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    """`qexec/pipeline/place.py` -> `qexec.pipeline.place`; a package's `__init__.py` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, ast.Module]:
    """Every module under qexec/, parsed."""
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def imported(tree: ast.Module, modules: set[str]) -> set[str]:
    """The qexec modules a module imports anywhere: at module level, inside functions and under TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in modules}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each a cycle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
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
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the qexec modules it imports; a package's own `__init__` is not counted as importing its modules."""
    trees = sources()
    modules = set(trees)
    graph = {name: imported(tree, modules) - {name} for name, tree in trees.items()}
    # `import qexec.x.y` runs qexec/__init__ and qexec/x/__init__ first; that is not the module's own dependency.
    return {name: {dep for dep in deps if not name.startswith(dep + ".")} for name, deps in graph.items()}


def test_the_package_has_no_import_cycle_counting_lazy_and_type_checking_imports() -> None:
    """A cycle is a concept without a home: the test counts every import, so a lazy one cannot hide it."""
    assert cycles(import_graph()) == []


def test_the_cycle_finder_sees_a_cycle_through_a_function_level_import() -> None:
    """The walker itself: an import inside a function, or under TYPE_CHECKING, closes a cycle."""
    a = ast.parse("import qexec.b\n")
    b = ast.parse("def f():\n    from qexec import a\n")
    c = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from qexec.a import X\n")
    modules = {"qexec.a", "qexec.b", "qexec.c"}
    graph = {"qexec.a": imported(a, modules), "qexec.b": imported(b, modules), "qexec.c": imported(c, modules)}
    assert cycles(graph) == [["qexec.a", "qexec.b"]]
    assert graph["qexec.c"] == {"qexec.a"}


def functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Every function and method, nested ones included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_function_is_longer_than_sixty_lines() -> None:
    """From `def` to its last line; a long function is several steps that want names of their own."""
    long = [
        f"{name}.{fn.name}: {length} lines"
        for name, tree in sources().items()
        for fn in functions(tree)
        if (length := (fn.end_lineno or fn.lineno) - fn.lineno + 1) > MAX_FUNCTION_LINES
    ]
    assert long == []


def code_map() -> list[tuple[str, list[str]]]:
    """The README's code map: each `qexec/...` entry with the `*.py` names its lines list."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Code map", 1)[1].split("```", 2)[1]
    entries: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        head = line.split()[0] if line.strip() else ""
        if head.startswith(("qexec/", "tests/", "bench/")):
            entries.append((head, []))
        if entries:
            entries[-1][1].extend(word.strip("(`),") for word in line.split() if word.strip("(`),").endswith(".py"))
    return entries


def test_the_readme_code_map_names_only_modules_that_exist_and_every_package() -> None:
    """A newcomer reads `ls qexec/` against the map: each path and module it names is there, each package is named."""
    entries = code_map()
    missing = []
    for path, names in entries:
        base = ROOT / path
        if not base.exists():
            missing.append(path)
        folder = base if base.is_dir() else base.parent
        missing += [f"{path}{name}" for name in names if "/" not in name and not (folder / name).exists()]
    assert missing == []
    named = {path.rstrip("/") for path, _ in entries}
    packages = {f"qexec/{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages <= named


def test_every_module_of_a_mapped_package_is_on_the_code_map() -> None:
    """A module added to pipeline/, positions/, venue/, worker/ or ops/ is added to the README's map too."""
    listed = {path: set(names) for path, names in code_map() if path.endswith("/") and names}
    unlisted = [
        f"{path}{module.name}"
        for path, names in listed.items()
        for module in sorted((ROOT / path).glob("*.py"))
        if module.name != "__init__.py" and module.name not in names
    ]
    assert unlisted == []
