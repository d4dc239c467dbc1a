"""The package's rooms and who may import whom, read from the source with ``ast`` (nothing is imported).

A room is a subpackage of ``eg_grpo`` (``eg_grpo.rl``, ``eg_grpo.sft``, ``eg_grpo.data``, ...) or one of its
top-level modules (``eg_grpo.io``, ``eg_grpo.cli``, ...); ``eg_grpo`` itself is the root ``__init__``. Every
import of an ``eg_grpo`` module is an edge, at module level or inside a function, relative imports resolved.
Checked here:

- no circle between rooms through module-level imports, nor through any import once the lazy imports of
  :data:`ALLOWED_LAZY` (each with its reason) are set aside;
- no circle between the modules of the stage rooms (:data:`NO_INNER_CIRCLES`), lazy imports included: the
  ``rl.stage`` / ``rl.continued_sft`` and ``sft.stage`` / ``sft.progressive`` circles stay broken;
- every subpackage's ``__init__`` docstring has a ``May import: eg_grpo.x, eg_grpo.y`` line (``none`` for
  none), and the room imports no other room of ``eg_grpo``.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "eg_grpo"

# Function-level imports between rooms that close a circle, and why they may. Each must stay inside a function.
ALLOWED_LAZY = {
    ("eg_grpo.stages", "eg_grpo.cli"): (
        "Stage.parse builds cli.StageParser, which imports TRL: `python -m eg_grpo.stages --help` answers "
        "without it, while cli.run_recipe looks the recipe's stage up in the table"
    ),
}
# Rooms whose modules import each other in one direction only, inside functions too. (Other rooms still have
# lazy circles of their own, e.g. decoding.generate -> decoding.sid_beam, which imports generate.)
NO_INNER_CIRCLES = ["eg_grpo.rl", "eg_grpo.sft"]


def _modules() -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (path, is a package __init__)}`` of every module under ``eg_grpo/``."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


MODULES = _modules()


def _targets(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """The ``eg_grpo`` modules an import statement loads (``from a import b``: ``a.b`` when it is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([node.module] if node.module else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _edges() -> list[tuple[str, str, bool, str]]:
    """``(importer, imported, inside a function, file:line)`` for every import of an ``eg_grpo`` module."""
    edges = []
    for name, (path, is_package) in MODULES.items():
        package = name if is_package else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), filename=str(path))
        lazy = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                lazy |= {id(inner) for inner in ast.walk(node) if inner is not node}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, package):
                    if target == "eg_grpo" or target.startswith("eg_grpo."):
                        where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                        edges.append((name, target, id(node) in lazy, where))
    return edges


EDGES = _edges()


def room(module: str) -> str:
    """``eg_grpo.rl.trainer`` -> ``eg_grpo.rl``; ``eg_grpo.io`` -> ``eg_grpo.io``; ``eg_grpo`` -> ``eg_grpo``."""
    return ".".join(module.split(".")[:2])


ROOMS = sorted({room(m) for m in MODULES})
SUBPACKAGES = sorted(r for r in ROOMS if r != "eg_grpo" and MODULES[r][1])


def _allowed(source: str, target: str) -> bool:
    return (room(source), room(target)) in ALLOWED_LAZY


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each a circle of imports."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
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


def _graph(key, include) -> dict[str, set[str]]:
    graph = defaultdict(set)
    for source, target, lazy, _ in EDGES:
        if key(source) != key(target) and include(source, target, lazy):
            graph[key(source)].add(key(target))
    return graph


def _explain(circles, key) -> str:
    members = {m for c in circles for m in c}
    lines = [f"{where}: {s} -> {t}" + (" (in a function)" if lazy else "") for s, t, lazy, where in EDGES
             if key(s) in members and key(t) in members and key(s) != key(t)]  # fmt: skip
    return f"import circles {circles}:\n" + "\n".join(sorted(set(lines)))


def test_the_walk_sees_the_rooms_and_their_imports():
    assert {"eg_grpo.rl", "eg_grpo.sft", "eg_grpo.data", "eg_grpo.stages"} <= set(SUBPACKAGES)
    assert ("eg_grpo.rl.stage", "eg_grpo.rl.trainer", False) in {(s, t, lazy) for s, t, lazy, _ in EDGES}


def test_no_circle_between_rooms_through_module_level_imports():
    circles = _circles(_graph(room, lambda s, t, lazy: not lazy))
    assert not circles, _explain(circles, room)


def test_no_circle_between_rooms_through_any_import_but_the_allowed_lazy_ones():
    circles = _circles(_graph(room, lambda s, t, lazy: not (lazy and _allowed(s, t))))
    assert not circles, _explain(circles, room)


@pytest.mark.parametrize("package", NO_INNER_CIRCLES)
def test_no_circle_between_the_modules_of_a_stage_room(package):
    circles = _circles(_graph(lambda m: m, lambda s, t, lazy: room(s) == room(t) == package))
    assert not circles, _explain(circles, lambda m: m)


def test_the_allowed_lazy_imports_exist_and_stay_lazy():
    for pair, reason in ALLOWED_LAZY.items():
        found = [(s, t, lazy, w) for s, t, lazy, w in EDGES if (room(s), room(t)) == pair]
        assert found, f"{pair} is no longer imported: drop it from ALLOWED_LAZY ({reason})"
        eager = [w for _, _, lazy, w in found if not lazy]
        assert not eager, f"{pair} may only be imported inside a function ({reason}): {eager}"


def declared_imports(package: str) -> set[str]:
    """The rooms of the ``May import:`` line of a subpackage's ``__init__`` docstring (to the next blank line)."""
    path = MODULES[package][0]
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    match = re.search(r"^May import:(.*(?:\n(?!\s*\n).+)*)", doc, re.M)
    assert match, f"{path}: the docstring needs a line 'May import: eg_grpo.x, eg_grpo.y' (or 'none')"
    names = [n.strip() for n in match.group(1).replace("\n", " ").split(",")]
    if names == ["none"]:
        return set()
    bad = [n for n in names if n not in ROOMS]
    assert not bad, f"{path}: 'May import' names what is not a room of eg_grpo: {bad} (rooms: {ROOMS})"
    return set(names)


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_each_room_imports_only_what_its_docstring_allows(package):
    allowed = declared_imports(package) | {package}
    used = [(t, w) for s, t, _, w in EDGES if room(s) == package and room(t) not in allowed]
    assert not used, (
        f"{package} imports rooms its __init__ docstring does not allow ('May import:'): "
        + "; ".join(f"{w} imports {t}" for t, w in used)
    )


def test_the_stage_rooms_keep_their_direction():
    """RL builds on SFT (its LoRA settings); SFT knows nothing of RL."""
    assert "eg_grpo.sft" in declared_imports("eg_grpo.rl")
    assert "eg_grpo.rl" not in declared_imports("eg_grpo.sft")


def test_test_modules_have_unique_basenames():
    """pytest's default (prepend) import mode imports ``tests/a/test_x.py`` and ``tests/b/test_x.py`` as one
    module ``test_x`` (the test folders are not packages), so a second file of the same name stops collection
    of the whole suite on a clean checkout. Helpers and ``conftest.py`` are exempt (pytest loads conftests by path)."""
    tests = Path(__file__).resolve().parent
    by_name: dict[str, list[str]] = defaultdict(list)
    for path in tests.rglob("test_*.py"):
        by_name[path.name].append(str(path.relative_to(tests)))
    assert {name: paths for name, paths in by_name.items() if len(paths) > 1} == {}
