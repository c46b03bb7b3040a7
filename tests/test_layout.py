"""The package layout: imports go one way only, and the light commands stay light.

The import graph is read from the source with :mod:`ast` (module-level and function-level
imports alike), so a cycle fails here even when it would only bite at run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "emim_bench"
HEAVY = ("torch", "pytorch_lightning", "solo")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """``{module: {emim_bench modules it imports}}``; ``from pkg import sub`` is ``pkg.sub``."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{a.name}"
                    if f"{node.module}.{a.name}" in modules
                    else node.module
                    for a in node.names
                ]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges - {"emim_bench"}  # the package itself only holds __version__
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "closed"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_package_imports_have_no_cycle():
    graph = import_graph()
    assert "emim_bench.report.collect" in graph["emim_bench.report.render"]  # the graph is real
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


@pytest.mark.parametrize("lower", ["losses", "metrics", "compat", "config", "data", "evaluate"])
def test_lower_layers_never_import_the_run_sweep_report_or_bench_layers(lower):
    upper = ("emim_bench.run", "emim_bench.sweep", "emim_bench.report", "emim_bench.bench")
    edges = import_graph()[f"emim_bench.{lower}"]
    assert not {e for e in edges if e.startswith(upper)}


def _loaded_after(code: str) -> list[str]:
    """The heavy libraries a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    return eval(out.stdout.strip().splitlines()[-1])


def test_help_imports_no_torch_lightning_or_solo_learn():
    code = (
        "from emim_bench.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "for sub in ('pretrain', 'sweep', 'report', 'bench', 'gpu-check', 'prepare'):\n"
        "    try:\n        main([sub, '--help'])\n    except SystemExit:\n        pass"
    )
    assert _loaded_after(code) == []


def test_report_command_imports_no_torch_lightning_or_solo_learn(tmp_path):
    runs = REPO / "tests" / "fixtures" / "report_runs" / "test"
    code = (
        f"from emim_bench.cli import main\nmain(['report', {str(runs)!r}, '-o', {str(tmp_path)!r}])"
    )
    assert _loaded_after(code) == []
    assert (tmp_path / "report.html").is_file()


def test_prepare_command_imports_no_torch_lightning_or_solo_learn(tmp_path):
    code = (
        "from emim_bench.cli import main\n"
        f"assert main(['prepare', 'imagenet100', '--source', {str(tmp_path)!r}]) == 2"
    )
    assert _loaded_after(code) == []


def test_the_run_loads_solo_learn_with_emim_registered():
    code = (
        "import emim_bench.run.pretrain\nfrom solo.methods import METHODS\nassert 'emim' in METHODS"
    )
    assert _loaded_after(code) == sorted(HEAVY)
