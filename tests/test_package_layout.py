"""The package layout: the analysis library and the optimizers import torch and nothing of the
trainer, data, models, Hydra or plotting; the scripts' harness (gsam.studies) is imported by nobody in gsam;
no two packages import each other, directly or around a loop (imports inside functions count too), nor two
modules of gsam/, data/ or models/; gsam/'s top level holds at most 10 modules, and no function of the library is over 60 lines."""
import ast
import gc
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# where each installed package's files are (pyproject: data/ and models/ install as gsam.data and gsam.models)
SOURCES = {"gsam": ROOT / "gsam", "gsam.data": ROOT / "data", "gsam.models": ROOT / "models"}
FORBIDDEN = ("hydra", "omegaconf", "timm", "matplotlib", "torchvision", "wandb", "gsam.data", "gsam.models",
             "gsam.studies", "gsam.run.experiment", "gsam.run.engine")


def modules() -> dict[str, Path]:
    """Every module of the installed packages by dotted name (a package by its own name)."""
    out = {}
    for prefix, folder in SOURCES.items():
        for f in folder.rglob("*.py"):
            parts = [*prefix.split("."), *f.relative_to(folder).with_suffix("").parts]
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def parse(path: Path) -> ast.Module:
    """``ast.parse`` with the cyclic collector off. On Python 3.11 a collection during the parse can run a
    finalizer that fails (numba's dispatcher finalizers do, after the FFCV tests), and printing that failure
    formats a traceback, which parses source itself: the nested parse resets 3.11's one recursion counter
    per interpreter and the outer one ends in "SystemError: AST constructor recursion depth mismatch" (seen
    in CI, 2026-12-07; CPython gh-106905)."""
    text = path.read_text()
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(text)
    finally:
        if enabled:
            gc.enable()


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ours that ``name`` imports, anywhere in the file."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = name.split(".")[: len(name.split(".")) + is_package - node.level] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known}
    return found


def package_of(module: str, known: dict[str, Path]) -> str:
    return module if known[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def package_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        src = package_of(name, known)
        graph.setdefault(src, set()).update(package_of(t, known) for t in imported(name, path, known))
        graph[src].discard(src)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that ends where it starts (depth-first search), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def test_the_package_import_graph_has_no_cycle_and_nothing_in_gsam_imports_the_harness():
    graph = package_graph()
    assert {"gsam", "gsam.analysis", "gsam.optim", "gsam.studies", "gsam.data", "gsam.models"} <= set(graph)
    assert "gsam.analysis" in graph["gsam"] and "gsam" in graph["gsam.studies"]  # the edges the check is about
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert [p for p, targets in graph.items() if "gsam.studies" in targets] == []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_analysis_library_and_the_optimizers_import_torch_only():
    """Every module of gsam.analysis and gsam.optim, imported in a fresh interpreter: what came in with them."""
    names = sorted(m for m in modules() if m.startswith(("gsam.analysis", "gsam.optim")))
    code = ("import importlib, json, sys\n"
            f"for m in {names!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    assert "gsam.analysis.monitor" in loaded and "gsam.optim.factory" in loaded and "torch" in loaded
    assert [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)] == []
    assert sorted({m for m in loaded if m.startswith("gsam.")} - set(names)) == []  # no other module of ours


def test_no_module_of_the_library_imports_itself_around_a_loop():
    """The module graph of gsam/, data/ and models/ (imports inside functions count): two modules that import each
    other, even within one package (the package graph above cannot see those), have no order in which they read."""
    known = modules()
    graph = {n: imported(n, known[n], known) - {n} for n in known}
    assert {"gsam.data.betons", "gsam.models.build"} <= set(graph)  # data/ and models/ are in the graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_gsam_has_at_most_ten_modules_at_its_top_level():
    """The layers are folders (run, state, config, evaluation, optim, analysis, studies): the top level keeps
    what every layer shares."""
    top = sorted(p.name for p in (ROOT / "gsam").glob("*.py"))
    assert len(top) <= 10, top


def test_no_function_of_the_library_is_over_60_lines():
    """Small functions (the project's guide): every def in gsam/, data/ and models/, nested ones included, is at
    most 60 lines from its def line to its last line."""
    long = []
    for name, path in modules().items():
        for node in ast.walk(parse(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert long == []
