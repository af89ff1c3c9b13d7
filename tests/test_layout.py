"""The package's shape: no import circles among ddi_tf's modules, counting function-local imports too
(a local import hides a circle from Python, not from a reader)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ddi_tf"


def module_name(path: Path) -> str:
    """``ddi_tf/deploy/export.py`` -> ``ddi_tf.deploy.export``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The ddi_tf modules ``path`` imports anywhere in its body (``from a.b import c`` counts ``a.b.c`` when that is
    a module, else ``a.b``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ddi_tf":
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("ddi_tf.")}
    return out & modules - {module_name(path), "ddi_tf"}


def import_graph() -> dict[str, set[str]]:
    """Every module of ddi_tf (dotted names) and the ddi_tf modules it imports; the package's own ``__init__``
    (environment set-up, imported by every command) is left out."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: _imports(p, set(files)) for m, p in files.items() if m != "ddi_tf"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_find_cycle_finds_a_circle_and_only_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_ddi_tf_has_no_import_circles():
    graph = import_graph()
    assert {"ddi_tf.deploy.export", "ddi_tf.quant.qat", "ddi_tf.training.trainer", "ddi_tf.quant.int8"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_board_package_never_imports_ddi_tf():
    """ddi_tf may import ddi_runtime (the manifest format, checksums, label rule), never the other way round."""
    runtime = PACKAGE.parent / "tflite" / "ddi_runtime"
    offenders = []
    for path in sorted(runtime.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "ddi_tf"]
    assert list(runtime.rglob("*.py")) and not offenders, offenders


MAX_LINES = 400
SOURCE_DIRS = ("ddi_tf", "tflite/ddi_runtime", "micro", "benchmarks", "tests")


def test_no_python_source_file_passes_the_line_budget():
    """A file longer than MAX_LINES holds several concerns: split it (see docs/CONTRACTS.md for who owns what)."""
    root = PACKAGE.parent
    files = [p for d in SOURCE_DIRS for p in (root / d).rglob("*.py") if "generated" not in p.parts]
    long = {str(p.relative_to(root)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert len(files) > 50 and not long, long
