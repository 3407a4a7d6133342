"""Dependencies point one way: cli -> stages -> package modules -> nothing of the pipeline.

Read from the source with ``ast`` (every import, also those inside functions), not by importing: a
lazy import inside a function is as much a dependency as one at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "reid"

# The entry points: argparse verbs only, they may import anything.
CLI = {"reid.cli", "reid.__main__", "reid.report.cli"}
# The pipeline stages: each one a function of its files; none imports another.
STAGES = {"reid.train", "reid.features", "reid.evaluate", "reid.export_onnx"}
# Cycles known and listed in docs/architecture.md ("Known departures"); any other one fails.
KNOWN_CYCLES: set[str] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports: ``from a.b import c`` counts as ``a.b.c`` where that is a
    module, else as ``a.b``; relative imports are resolved; imports of the module's own parent
    packages (Python runs them first anyway) are left out."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                found.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod)
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return {m for m in found if m in known and m != name and m not in ancestors}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_the_scanner_sees_real_imports(graph):
    # the scanner itself: lazy imports inside functions and `from reid import x` forms are found
    assert "reid.models.runtime" in graph["reid.features"]
    assert "reid.tracking" in graph["reid.train"]  # `from reid import io, tracking`
    assert "reid.train" in graph["reid.cli"]  # imported inside cmd_train only
    assert STAGES <= set(graph) and CLI <= set(graph)


def test_no_stage_imports_another_stage(graph):
    wrong = {f"{s} -> {t}" for s in STAGES for t in graph[s] & STAGES}
    assert not wrong, f"stages must not import each other: {sorted(wrong)}"


def test_package_modules_import_no_stage_and_no_cli(graph):
    wrong = {f"{m} -> {t}" for m, deps in graph.items() if m not in CLI | STAGES for t in deps & (STAGES | CLI)}
    assert not wrong, f"data, models, metrics, report, tracking, ... must not import a stage or the CLI: {sorted(wrong)}"
    stage_to_cli = {f"{s} -> {t}" for s in STAGES for t in graph[s] & CLI}
    assert not stage_to_cli, sorted(stage_to_cli)


def test_no_import_cycles(graph):
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    new = sorted(set(cycles) - KNOWN_CYCLES)
    assert not new, f"import cycles: {new}"
