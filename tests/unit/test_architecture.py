"""The layering of the design doc, checked on the real import graph (grimp, as lint-imports)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
CAPABILITIES = ("attacks", "defenses", "privacy", "federated", "deepfakes", "segmentation")
FOUNDATIONS = ("training", "data", "models", "metrics")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("medsec", "tasks", "flows", cache_dir=None)


def _cycle(graph: grimp.ImportGraph, modules: set[str]) -> list[str] | None:
    """One import cycle among ``modules`` (as a list of modules), or None (iterative DFS)."""
    state: dict[str, int] = {}
    for root in sorted(modules):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        state[root], path = 1, [root]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                imported = graph.find_modules_directly_imported_by(child) & modules
                stack.append((child, iter(sorted(imported))))
    return None


def test_lint_imports_contract_is_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    done = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]


def test_no_module_level_import_cycle(graph):
    """Type-only imports count: a cycle hidden behind TYPE_CHECKING is still a tangle."""
    assert _cycle(graph, set(graph.modules)) is None, _cycle(graph, set(graph.modules))


@pytest.mark.parametrize("package", CAPABILITIES + FOUNDATIONS)
def test_packages_never_see_the_whole_config(graph, package):
    chain = graph.find_shortest_chain(importer=f"medsec.{package}", imported="medsec.config",
                                      as_packages=True)
    assert chain is None, f"medsec.{package} reaches the top-level config via {chain}"


def test_cycle_finder_finds_a_cycle():
    """The checker can fail: a graph with a -> b -> a is reported."""
    fake = grimp.ImportGraph()
    for name in ("a", "b", "c"):
        fake.add_module(name)
    fake.add_import(importer="a", imported="b")
    fake.add_import(importer="b", imported="c")
    assert _cycle(fake, {"a", "b", "c"}) is None
    fake.add_import(importer="c", imported="a")
    assert _cycle(fake, {"a", "b", "c"}) == ["a", "b", "c", "a"]


def test_plain_training_does_not_load_opacus():
    """The fit strategy is chosen without importing Opacus; only a DP run loads it."""
    code = ("import sys; from medsec.config import load_config; "
            "from medsec.stages.classifier import fit_strategy; "
            "plain = fit_strategy(load_config()); assert 'opacus' not in sys.modules, 'plain'; "
            "dp = fit_strategy(load_config(overrides=['privacy.dp.enabled=true', "
            "'privacy.dp.target_epsilon=8', 'model.norm=group'])); "
            "print(plain.__name__, type(dp).__name__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["plain_fit", "DPStrategy"]
