"""Count string-key lookups in td3/ (and analysis/): how much code picks a config dict apart.

    python tools/config_lookups.py                   # td3/ and analysis/
    python tools/config_lookups.py --names cfg,s,d   # these names only (and their aliases)
    python tools/config_lookups.py --top 30 --json
    python tools/config_lookups.py --root DIR        # another checkout (e.g. a `git archive` of a commit)

A lookup is, read from the source with ``ast``:

- a subscript by a string literal, read or written: ``cfg["x"]``, ``s['mu']``, and
  ``cfg["a"]["b"]`` counts twice (two dict accesses, each one a typed config would replace);
- a ``.get("key", ...)`` call whose first argument is a string literal.

Unfiltered, this counts *every* such expression: records, metric dicts, DataFrame columns,
``os.environ.get``, JSON payloads, not only configs. The filtered count keeps the lookups on
a *config holder*: by default a name whose text contains ``cfg`` or ``config``
(``cfg``, ``config``, ``full_cfg``, ``self.cfg``), plus every name assigned anywhere in the
same file from a lookup on a holder (``s, d = cfg["summary"], cfg["distill"]`` makes ``s``
and ``d`` holders in that file, ``inner = d["inner"]`` then ``inner``, ``self.d = d`` then
``self.d``). Aliases are followed per file, not per function: a ``d`` that is a config part in
one function of a file is taken for one in all of them (in td3/distill.py they all are). An
argument passed to another file (``model_options(cfg["model"])`` reading ``options["x"]``)
is not followed, so the filtered count is a lower bound; ``--names`` replaces the default
holders by exact names (``self.cfg`` spelled as such). Membership tests (``"x" in cfg``) and
attribute access are not counted. Standard library only.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ("td3", "analysis")
DEFAULT_HOLDER = re.compile(r"cfg|config", re.IGNORECASE)


def lookups(tree: ast.AST):
    """(key, holder expression) for every string-key subscript and .get call."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_str(node.slice):
            yield node.slice.value, node.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and _is_str(node.args[0])):
            yield node.args[0].value, node.func.value


def _is_str(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def root(node: ast.AST) -> str | None:
    """The variable a lookup chain starts from: ``cfg`` for ``cfg["a"].get("b")``,
    ``self.cfg`` for ``self.cfg["a"]``, ``d`` for ``(d.get("x") or {})``; None for anything
    else (a call result, a literal)."""
    while True:
        if isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            node = node.func.value
        elif isinstance(node, ast.BoolOp):   # cfg.get("x") or {}
            node = node.values[0]
        elif isinstance(node, ast.Name):
            return node.id
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            return f"{node.value.id}.{node.attr}"
        else:
            return None


def is_lookup(node: ast.AST) -> bool:
    """Whether ``node`` takes something out of a container (not the container itself)."""
    while isinstance(node, ast.BoolOp):
        node = node.values[0]
    return isinstance(node, ast.Subscript) or (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get")


def assignments(tree: ast.AST):
    """(target name, value) pairs, tuples unpacked position by position."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            pairs = [(t, node.value) for t in node.targets]
        elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            pairs = [(node.target, node.value)]
        else:
            continue
        while pairs:
            target, value = pairs.pop(0)
            if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
                pairs += list(zip(target.elts, value.elts))
            elif isinstance(target, (ast.Name, ast.Attribute)) and root(target) is not None:
                yield root(target), value


def holders(tree: ast.AST, is_holder) -> set[str]:
    """The names holding a config or a part of one in this file: the seeds, then whatever
    is assigned from a lookup on a holder (or a holder itself: ``self.d = d``), to a fixpoint."""
    pairs = list(assignments(tree))
    found = {name for name, _ in pairs if is_holder(name)}
    found |= {r for _, held in lookups(tree) if (r := root(held)) and is_holder(r)}
    while True:
        more = {name for name, value in pairs if name not in found and root(value) in found
                and (is_lookup(value) or isinstance(value, (ast.Name, ast.Attribute)))}
        if not more:
            return found
        found |= more


def scan(root_dir: Path, names: set[str] | None, follow: bool) -> dict:
    is_holder = (lambda n: n in names) if names else (lambda n: bool(DEFAULT_HOLDER.search(n)))
    per_file, per_file_cfg, aliases = Counter(), Counter(), {}
    keys, keys_cfg = Counter(), Counter()
    for tree_name in TREES:
        for path in sorted((root_dir / tree_name).rglob("*.py")):
            rel = str(path.relative_to(root_dir))
            tree = ast.parse(path.read_text(), filename=rel)
            held = holders(tree, is_holder) if follow else set()
            # the aliases worth naming: those something is looked up on (not ``mu = s["mu"]``)
            looked_up = {root(container) for _, container in lookups(tree)}
            if named := sorted(n for n in held & looked_up if not is_holder(n)):
                aliases[rel] = named
            for key, container in lookups(tree):
                per_file[rel] += 1
                keys[key] += 1
                r = root(container)
                if r is not None and (is_holder(r) or r in held):
                    per_file_cfg[rel] += 1
                    keys_cfg[key] += 1
    return {"total": sum(per_file.values()), "config_total": sum(per_file_cfg.values()),
            "holders": ",".join(sorted(names)) if names else f"names matching /{DEFAULT_HOLDER.pattern}/i",
            "aliases_followed": follow,
            "per_file": dict(per_file.most_common()), "config_per_file": dict(per_file_cfg.most_common()),
            "keys": dict(keys.most_common()), "config_keys": dict(keys_cfg.most_common()),
            "aliases": aliases}


def print_text(r: dict, top: int) -> None:
    print(f"== string-key lookups: {r['total']} in all, {r['config_total']} on config holders "
          f"({r['holders']}" + (", and their aliases)" if r["aliases_followed"] else ")"))
    print(f"\n{'all':>6} {'config':>6}  file")
    for path, n in r["per_file"].items():
        print(f"{n:6d} {r['config_per_file'].get(path, 0):6d}  {path}")
    print("\n== aliases followed (per file)")
    for path, names in r["aliases"].items():
        print(f"  {path}: {' '.join(names)}")
    for title, counts in (("all lookups", r["keys"]), ("config lookups", r["config_keys"])):
        shown = list(counts.items())[:top]
        print(f"\n== top {len(shown)} keys, {title} ({len(counts)} distinct)")
        print("  " + ", ".join(f"{k} {n}" for k, n in shown))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--names", help="comma-separated config holders (default: names containing cfg or config)")
    ap.add_argument("--no-aliases", action="store_true", help="count the holders' own lookups only")
    ap.add_argument("--top", type=int, default=20, help="how many keys to list (default 20)")
    ap.add_argument("--json", action="store_true", help="print the counts as JSON")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout to scan (default: this one)")
    args = ap.parse_args(argv)
    names = {n.strip() for n in args.names.split(",") if n.strip()} if args.names else None
    r = scan(args.root.resolve(), names, follow=not args.no_aliases)
    if args.json:
        json.dump(r, sys.stdout, indent=1)
        print()
    else:
        print_text(r, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
