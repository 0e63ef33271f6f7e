"""The import graph of the project's own modules: no cycle, no lower layer importing a higher one.

Layers (docs/ARCHITECTURE.md, "Layers"):

* core      cmedbert.{config, artifact, errors, paths, cliargs, training, stage} and the package itself;
            imports nothing of ours above core.
* stages    cmedbert.{corpus, tokenizer, pretrain, launch, finetune}; import core, their own stage
            and only the stages upstream of them in STAGE_DAG.
* pipeline  cmedbert.{experiment, compare, demo, report, publish}; may import core and stages.
* entry     cmedbert.cli, cmedbert.__main__ and cmedbert.launch.worker (the module every rank
            runs with ``python -m``): they may import anything, nothing imports them.

Every import counts, also the ones inside functions (lazy imports are still dependencies), and the
subcommand modules cmedbert.cli loads by name (``STAGES``). The demo data tools under
cmedbert/demo_data/tools are stand-alone scripts (stdlib only) and not part of the graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAGES = ("corpus", "tokenizer", "pretrain", "launch", "finetune")
CORE = {"cmedbert", "cmedbert.config", "cmedbert.artifact", "cmedbert.errors", "cmedbert.paths",
        "cmedbert.cliargs", "cmedbert.training", "cmedbert.stage", "cmedbert.shared_data"}  # shared_data: old import shim
PIPELINE = {"cmedbert.experiment", "cmedbert.compare", "cmedbert.demo", "cmedbert.report", "cmedbert.publish"}
ENTRY = {"cmedbert.cli", "cmedbert.__main__", "cmedbert.launch.worker"}
# Which other stages a stage may import: only upstream in the data flow
# corpus -> tokenizer (+pack) -> pretrain -> launch; finetune reads a checkpoint folder and loads
# its tokenizer through tokenizer.base.load_tokenizer.
STAGE_DAG: dict[str, set[str]] = {
    "corpus": set(),
    "tokenizer": {"corpus"},
    "pretrain": {"tokenizer"},
    "launch": {"pretrain", "tokenizer", "finetune"},  # finetune: SLURM-array sweeps (launch.finetune_array)
    "finetune": {"tokenizer"},
}


def module_files() -> dict[str, Path]:
    """Installed module name -> source file, for every .py of the package and the stage folders."""
    out: dict[str, Path] = {}
    for top, prefix in [("cmedbert", "cmedbert")] + [(s, f"cmedbert.{s}") for s in STAGES]:
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO / top)
            if rel.parts[0] == "demo_data":
                continue
            parts = [prefix, *rel.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _target(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` is or lies in (``a.b.func`` -> ``a.b``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] or [base]
        else:
            continue
        for n in names:
            t = _target(n, known)
            if t is not None and t != module:
                found.add(t)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    graph = {m: imports_of(m, p, known) for m, p in files.items()}
    from cmedbert.cli import STAGES as SUBCOMMANDS  # loaded with importlib by name

    graph["cmedbert.cli"] |= {m for m in SUBCOMMANDS.values() if m in known}
    return graph


def layer(module: str) -> str:
    if module in ENTRY:
        return "entry"
    if module in CORE:
        return "core"
    if any(module == p or module.startswith(p + ".") for p in PIPELINE):  # cmedbert.publish is a package
        return "pipeline"
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in STAGES:
        return "stage"
    raise AssertionError(f"{module}: not assigned to a layer (add it to CORE or PIPELINE in this test and "
                         "to docs/ARCHITECTURE.md)")


def stage_of(module: str) -> str:
    return module.split(".")[1]


def allowed(src: str, dst: str) -> bool:
    ls, ld = layer(src), layer(dst)
    if ls == "entry":
        return True
    if ld == "entry":
        return False
    if ls == "core":
        return ld == "core"
    if ls == "stage":
        if ld == "core":
            return True
        if ld != "stage":
            return False
        return stage_of(dst) == stage_of(src) or stage_of(dst) in STAGE_DAG[stage_of(src)]
    return ld in ("core", "stage", "pipeline")  # pipeline


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_graph_sees_lazy_and_relative_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import os\nfrom cmedbert.errors import CmedbertError\n\ndef f():\n"
                   "    from cmedbert.corpus import kg\n    import cmedbert.tokenizer.base as b\n", encoding="utf-8")
    known = {"cmedbert", "cmedbert.errors", "cmedbert.corpus", "cmedbert.corpus.kg", "cmedbert.tokenizer",
             "cmedbert.tokenizer.base"}
    assert imports_of("cmedbert.corpus.x", src, known) == {"cmedbert.errors", "cmedbert.corpus.kg",
                                                          "cmedbert.tokenizer.base"}
    src.write_text("from . import kg\nfrom .kg import read\n", encoding="utf-8")
    assert imports_of("cmedbert.corpus.x", src, known) == {"cmedbert.corpus.kg"}


def test_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_has_a_layer():
    for module in module_files():
        layer(module)


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_upward_or_sideways_imports():
    bad = sorted(f"{src} ({layer(src)}) imports {dst} ({layer(dst)})"
                 for src, dsts in import_graph().items() for dst in dsts if not allowed(src, dst))
    assert not bad, "imports against the layers (see docs/ARCHITECTURE.md):\n" + "\n".join(bad)


@pytest.mark.parametrize("src,dst,ok", [
    ("cmedbert.config", "cmedbert.corpus.config", False),
    ("cmedbert.corpus.build", "cmedbert.tokenizer.base", False),
    ("cmedbert.pretrain.data", "cmedbert.tokenizer.packed", True),
    ("cmedbert.tokenizer.pack", "cmedbert.pretrain.train", False),
    ("cmedbert.corpus.cli", "cmedbert.cli", False),
    ("cmedbert.experiment", "cmedbert.finetune.run", True),
    ("cmedbert.finetune.table", "cmedbert.compare", False),
])
def test_layer_rules(src, dst, ok):
    assert allowed(src, dst) is ok
