"""The import graph of the ``td3`` package, read from the source with ``ast`` (nothing is imported).

    python tools/import_graph.py                 # td3/ only
    python tools/import_graph.py --all           # also analysis/ and hydra_plugins/
    python tools/import_graph.py --dot deps.dot  # also a Graphviz file (dot -Tsvg deps.dot)
    python tools/import_graph.py --json          # machine-readable, nothing else printed
    python tools/import_graph.py --root DIR      # another checkout (e.g. a `git archive` of a commit)

Prints (a) each module with its line count, (b) the arrows ``a -> b`` between modules of the
scanned tree, an import inside a function marked ``lazy``, (c) layers by the longest path
down to a module importing nothing internal (layer 0), over every arrow, lazy ones included,
(d) cycles (strongly connected components of more than one module), over every arrow and
over top-level arrows only (only the latter can fail at import time), and (e) the modules
whose import loads torch: a top-level ``import torch`` (or of a package that imports torch
itself) in the module, in a module it imports at top level, or in a package ``__init__``
Python runs first (``import td3.models.sasrec`` runs ``td3/models/__init__.py``).

``analysis/`` is scripts rather than a package (``from load import ...``): a bare import of a
sibling file there is an arrow to that file. Standard library only.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRA_TREES = ("analysis", "hydra_plugins")
#: Third-party packages that import torch when they are imported.
TORCH_PACKAGES = {"torch", "higher", "torchvision"}


@dataclass
class Module:
    name: str
    path: Path      # relative to the root scanned
    lines: int
    internal: dict[str, bool] = field(default_factory=dict)   # imported module -> lazy (every import of it is)
    external: dict[str, bool] = field(default_factory=dict)   # top-level package -> lazy


def module_name(path: Path) -> str:
    parts = list(path.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(root: Path, trees: list[str]) -> dict[str, Module]:
    modules = {}
    for tree in trees:
        for path in sorted((root / tree).rglob("*.py")):
            rel = path.relative_to(root)
            modules[module_name(rel)] = Module(module_name(rel), rel, len(path.read_text().splitlines()))
    return modules


def is_package(module: Module) -> bool:
    return module.path.name == "__init__.py"


def is_script_dir(module: Module, known: dict[str, Module]) -> bool:
    """A directory of scripts (no __init__.py, like analysis/), not a package."""
    return module_name(module.path.parent / "__init__.py") not in known


def imports(tree: ast.AST):
    """(node, lazy) for every import statement; lazy: inside a function body, so it runs
    when the function is called, not when the module is imported."""
    def visit(node: ast.AST, lazy: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, lazy
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from visit(child, inner)
    yield from visit(tree, False)


def targets(module: Module, node: ast.Import | ast.ImportFrom, known: dict[str, Module]) -> list[str]:
    """The dotted names an import statement loads, absolute."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:   # relative: from the module's package, one level up per extra dot
        package = module.name.split(".") if is_package(module) else module.name.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    # ``from pkg import name``: name is a submodule when such a file exists, else an attribute of pkg
    found = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
    return found or [base]


def resolve(name: str, importer: Module, known: dict[str, Module]) -> str | None:
    """The scanned module a dotted name lands in (its longest known prefix), or None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    # a script directory (no __init__.py: analysis/) imports its siblings by bare name
    if is_script_dir(importer, known):
        sibling = module_name(importer.path.parent / f"{parts[0]}.py")
        if sibling in known:
            return sibling
    return None


def build(root: Path, trees: list[str]) -> dict[str, Module]:
    known = discover(root, trees)
    for module in known.values():
        for node, lazy in imports(ast.parse((root / module.path).read_text(), filename=str(module.path))):
            for name in targets(module, node, known):
                inside = resolve(name, module, known)
                table, key = (module.internal, inside) if inside else (module.external, name.split(".")[0])
                if key and key != module.name:
                    table[key] = table.get(key, True) and lazy   # one top-level import makes it eager
    return known


def edges(modules: dict[str, Module], eager_only: bool = False) -> dict[str, list[str]]:
    return {m.name: sorted(t for t, lazy in m.internal.items() if not (eager_only and lazy))
            for m in modules.values()}


def layers(graph: dict[str, list[str]], components: list[list[str]]) -> dict[str, int]:
    """Longest path down to a leaf; the modules of one cycle share a layer."""
    home = {name: i for i, comp in enumerate(components) for name in comp}
    memo: dict[int, int] = {}

    def depth(c: int) -> int:
        if c not in memo:
            below = {home[t] for name in components[c] for t in graph[name]} - {c}
            memo[c] = 1 + max(map(depth, below)) if below else 0
        return memo[c]
    return {name: depth(home[name]) for name in graph}


def strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm (recursive: a few hundred modules stay far below the recursion limit)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
            out.append(sorted(comp))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def torch_at_import(modules: dict[str, Module]) -> dict[str, str]:
    """Module -> why importing it loads torch: the shortest chain of imports to a module importing it."""
    graph = edges(modules, eager_only=True)
    for name in modules:   # Python runs every enclosing package's __init__ first
        parts = name.split(".")
        graph[name] = graph[name] + [p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in modules]
    direct = {m.name for m in modules.values() if any(p in TORCH_PACKAGES and not lazy
                                                       for p, lazy in m.external.items())}
    why: dict[str, str] = {}
    for start in sorted(modules):
        seen, queue, parent = {start}, [start], {}
        while queue:   # breadth first: the shortest chain to a module importing torch itself
            current = queue.pop(0)
            if current in direct:
                chain = [current]
                while chain[-1] != start:
                    chain.append(parent[chain[-1]])
                why[start] = " -> ".join(reversed(chain)) + " -> torch"
                break
            for nxt in graph[current]:
                if nxt not in seen:
                    seen.add(nxt)
                    parent[nxt] = current
                    queue.append(nxt)
    return why


def report(modules: dict[str, Module]) -> dict:
    graph = edges(modules)
    components = strongly_connected(graph)
    layer = layers(graph, components)
    eager_cycles = [c for c in strongly_connected(edges(modules, eager_only=True)) if len(c) > 1]
    return {
        "modules": {m.name: {"path": str(m.path), "lines": m.lines, "layer": layer[m.name]}
                    for m in modules.values()},
        "arrows": [{"from": m.name, "to": t, "lazy": lazy} for m in modules.values()
                   for t, lazy in sorted(m.internal.items())],
        "layers": [sorted(n for n in layer if layer[n] == k) for k in range(max(layer.values(), default=-1) + 1)],
        "cycles": [c for c in components if len(c) > 1],
        "cycles_top_level": eager_cycles,
        "torch_at_import": torch_at_import(modules),
    }


def print_text(r: dict) -> None:
    mods = r["modules"]
    total = sum(m["lines"] for m in mods.values())
    print(f"== modules ({len(mods)}, {total} lines), largest first")
    for name, m in sorted(mods.items(), key=lambda kv: (-kv[1]["lines"], kv[0])):
        print(f"  {m['lines']:5d}  {name}")
    lazy = sum(a["lazy"] for a in r["arrows"])
    print(f"\n== arrows ({len(r['arrows'])}: {len(r['arrows']) - lazy} top-level, {lazy} lazy)")
    for a in r["arrows"]:
        print(f"  {a['from']} -> {a['to']}" + ("  (lazy)" if a["lazy"] else ""))
    print("\n== layers (0: imports nothing internal; lazy arrows count)")
    for k, names in enumerate(r["layers"]):
        print(f"  {k}: {' '.join(names)}")
    print(f"\n== cycles ({len(r['cycles'])} over every arrow, {len(r['cycles_top_level'])} over top-level arrows)")
    for c in r["cycles"]:
        print(f"  {' <-> '.join(c)}" + ("  (top-level)" if c in r["cycles_top_level"] else "  (through a lazy import)"))
    torch = r["torch_at_import"]
    print(f"\n== importing torch at import time ({len(torch)} of {len(mods)})")
    for name in sorted(torch):
        print(f"  {name}: {torch[name]}")
    free = sorted(set(mods) - set(torch))
    print(f"  without torch: {' '.join(free)}")


def write_dot(r: dict, path: Path) -> None:
    lines = ["digraph td3 {", "  rankdir=BT;", "  node [shape=box, fontsize=10];"]
    for k, names in enumerate(r["layers"]):
        lines.append("  { rank=same; " + " ".join(f'"{n}";' for n in names) + " }")
    for name, m in r["modules"].items():
        colour = ', style=filled, fillcolor="#f4cccc"' if name in r["torch_at_import"] else ""
        lines.append(f'  "{name}" [label="{name}\\n{m["lines"]} lines"{colour}];')
    for a in r["arrows"]:
        lines.append(f'  "{a["from"]}" -> "{a["to"]}"' + (" [style=dashed];" if a["lazy"] else ";"))
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help=f"also scan {', '.join(EXTRA_TREES)}")
    ap.add_argument("--dot", type=Path, help="write a Graphviz file (lazy arrows dashed, torch modules shaded)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout to scan (default: this one)")
    args = ap.parse_args(argv)
    r = report(build(args.root.resolve(), ["td3", *(EXTRA_TREES if args.all else ())]))
    if args.dot:
        write_dot(r, args.dot)
    if args.json:
        json.dump(r, sys.stdout, indent=1)
        print()
    else:
        print_text(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
