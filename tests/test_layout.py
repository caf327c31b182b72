"""The package layout: the library (``maskx``) never imports the study harness, the release step or
the app, and no package has an import cycle. Imports are read from the source (every ``import``,
module-level or inside a function), so a lazy import counts as much as a top-level one."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = "maskx"
TOOLS = ("maskx_study", "maskx_release", "maskx_app")
# The command line dispatches `study` and `ship` to their packages; it is the one library module that
# may import them, and no module imports it.
FRONT_DOOR = "maskx.__main__"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(packages=(LIBRARY, *TOOLS)) -> dict[str, Path]:
    return {module_name(p): p for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return found


def graph(packages=(LIBRARY, *TOOLS)) -> dict[str, set[str]]:
    mods = modules(packages)
    return {m: {i for i in imports_of(m, p) if i in mods and i != m} for m, p in mods.items()}


def find_cycle(edges: dict[str, set[str]]):
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                cycle = visit(n)
                if cycle:
                    return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_the_library_imports_no_harness_release_or_app():
    offending = []
    for name, path in modules((LIBRARY,)).items():
        if name == FRONT_DOOR:
            continue
        bad = sorted(i for i in imports_of(name, path) if i.split(".")[0] in TOOLS + ("app",))
        offending += [f"{name} imports {b}" for b in bad]
    assert not offending, "the library must not import the study, release or app packages:\n" + "\n".join(offending)


def test_nothing_imports_the_command_line():
    users = [m for m, deps in graph().items() if FRONT_DOOR in deps and m != FRONT_DOOR]
    assert not users


def test_no_import_cycles():
    edges = graph()
    # a package's __init__ importing its own submodule and that submodule reading the package
    # (``from . import __version__``) is how Python packages work, not a cycle between ideas
    for m in edges:
        edges[m] = {n for n in edges[m] if not (n.startswith(m + ".") or m.startswith(n + "."))}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_see_a_planted_violation_and_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    path = ROOT / "maskx" / "predictor.py"
    assert "maskx.hub" in imports_of("maskx.predictor", path)  # a lazy, relative import is seen
    assert "maskx.config" in imports_of("maskx.predictor", path)
