"""The package's shape (issue 12 item 7): imports go one way, and the launcher stays light."""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
from pathlib import Path

import sagips
from sagips.config import CLUSTERS
from sagips.errors import ConfigError, JobFailed, Stopped
from sagips.launch.runner import LAUNCHERS

PACKAGE = Path(sagips.__file__).parent


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every sagips module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sagips"):
            # `from sagips.launch import local` imports the module sagips.launch.local
            found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                         for a in node.names)  # fmt: skip
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("sagips"))
    return found


def module_graph() -> dict[str, set[str]]:
    """Module -> the sagips modules it imports; a package's own submodules import it harmlessly."""
    paths = {
        ".".join(("sagips", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): p
        for p in PACKAGE.rglob("*.py")
    }
    return {name: {m for m in imports_of(path, set(paths)) if m in paths and not name.startswith(m + ".")}
            - {name} for name, path in paths.items()}  # fmt: skip


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    return next((c for node in sorted(graph) if node not in state and (c := visit(node))), None)


def test_the_package_has_no_import_cycle():
    graph = module_graph()
    assert "sagips.launch.runner" in graph["sagips.cli"]  # the graph sees the imports
    assert cycle(graph) is None, " -> ".join(cycle(graph))


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_launcher_loads_neither_torch_nor_mpi():
    code = ("import sys, sagips.cli; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'mpi4py'}))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_cluster_has_a_launcher():
    assert set(LAUNCHERS) == set(CLUSTERS)


def test_errors_cross_a_process_border_intact():
    """A sweep's job, a process of its own, hands its error to the launcher pickled."""
    errors = (ConfigError("ranks", 0, "must be >= 1"), JobFailed("job RUN failed", 3), Stopped(2, "stopped"))
    for error in errors:
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and str(back) == str(error) and vars(back) == vars(error)
