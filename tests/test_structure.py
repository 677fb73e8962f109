"""The import structure of src/alexlab: no cycles (imports inside functions count too), and the
layers the architecture promises (docs/ARCHITECTURE.md, "Imports")."""
import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "alexlab"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path) -> set[str]:
    """The alexlab modules a module imports anywhere in its text (top level or inside a function),
    with the packages Python initialises on the way (importing a.b.c runs a.b first)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets.add(base)
            targets |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES}
    edges = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in MODULES and prefix != name and not name.startswith(prefix + "."):
                edges.add(prefix)  # a module's own enclosing packages are already running: no edge
    return edges


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_alexlab_imports_itself_back_through_others():
    assert cycles(GRAPH) == [], "import cycles (imports inside functions count too)"


def reach(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("module,allowed", [
    ("alexlab.run_folder", {"alexlab.errors", "alexlab.settings"}),
    ("alexlab.settings", set()),
    ("alexlab.errors", set()),
    ("alexlab.curves", set()),
])
def test_bottom_modules_import_only_what_lies_below_them(module, allowed):
    assert GRAPH[module] <= allowed, f"{module} imports {sorted(GRAPH[module] - allowed)}"


def test_nothing_imports_the_command_line_entry_and_the_report_stays_off_training():
    assert not [m for m, targets in GRAPH.items() if "alexlab.cli" in targets]
    training = {"alexlab.train", "alexlab.sweep", "alexlab.callbacks", "alexlab.module", "alexlab.wandb_logger"}
    for name in (m for m in MODULES if m.startswith("alexlab.report")):
        assert not reach(name) & training, f"{name} reaches {sorted(reach(name) & training)}"
    assert "alexlab.train" not in reach("alexlab.sweep"), "sweep must not import train (run is passed in)"
