"""A sweep's grid: a union of cartesian products, written in Hydra's override syntax.

A paper table is rarely one cartesian product: Table 2 pairs each dataset with its own
summary sizes. A sweep file (``sweeps/*.yaml``) therefore lists ``hydra.sweeper.params``
(swept for every job, e.g. ``seed: 0,1,2``) and ``hydra.sweeper.grid``, a list of blocks,
each one cartesian product (``{dataset: ml-100k, summary.mu: "30,50"}``). The jobs are the
union of the blocks' products with the params and the command line's overrides.

The command line replaces a param's values (``seed=0,1,2,3,4``), and *selects* among a
key that the blocks set: ``dataset=ml-100k`` keeps the ML-100K jobs of Table 2 rather than
running every block on ML-100K. The Hydra sweeper (``hydra_plugins/td3_grid_sweeper``) and the Ray Tune
entry point (``td3.tune``) expand a sweep with this one function, so both run the same
grid.
"""
from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Iterable, Mapping, Sequence


def _key(override: str) -> str:
    """The config key an override sets, without Hydra's +, ++ or ~ prefix."""
    return override.split("=", 1)[0].lstrip("+~")


def _as_override(key: str, value) -> str:
    if isinstance(value, (list, tuple)):  # YAML list: the values to sweep
        value = ",".join(str(v) for v in value)
    return f"{key}={value}"


def _values(override) -> list[str]:
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def expand(params: Mapping | None, grid: Sequence[Mapping] | None, arguments: Iterable[str]) -> list[list[str]]:
    """The jobs of a sweep, each a list of overrides, in a stable order without duplicates."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    arguments = list(arguments)
    blocks = [dict(b) for b in grid] if grid else [{}]
    block_keys = {_key(k) for b in blocks for k in b}
    selections = {}  # key -> values the command line keeps, for keys the blocks set
    for override in parser.parse_overrides([a for a in arguments if _key(a) in block_keys]):
        selections[_key(override.input_line)] = set(_values(override))
    jobs, seen = [], set()
    for block in blocks:
        merged: OrderedDict[str, str] = OrderedDict()
        for source in (params or {}), block:
            for key, value in source.items():
                merged[_key(key)] = _as_override(key, value)
        for argument in arguments:
            if _key(argument) not in selections or _key(argument) not in merged:
                merged[_key(argument)] = argument
        axes = []
        for override in parser.parse_overrides(list(merged.values())):
            key = override.get_key_element()
            if override.is_sweep_override():
                if not override.is_discrete_sweep():
                    raise ValueError(f"{key}: only lists of values (a,b,c / range / choice) can be swept")
                axes.append([f"{key}={v}" for v in override.sweep_string_iterator()])
            else:
                axes.append([f"{key}={override.get_value_element_as_str()}"])
        for job in itertools.product(*axes):
            if any(_key(o) in selections and o.split("=", 1)[1] not in selections[_key(o)] for o in job):
                continue
            if job not in seen:
                seen.add(job)
                jobs.append(list(job))
    return jobs


def spread_shared(jobs: Sequence, keys: Sequence) -> list:
    """``jobs`` reordered so that jobs sharing work come after every distinct piece of work
    has started: the first job of each key (e.g. the summary a distillation writes) keeps its
    place among the others, the second ones follow, and so on; ``None`` shares nothing.

    A sweep's grid puts the two evaluation protocols of one summary next to each other, and
    a cluster starts neighbours together: the second would then sit on a CPU waiting for
    the first one's distillation (an hour on ML-1M) instead of distilling another summary.
    Run after the others, it finds the summary complete and only evaluates it."""
    seen: dict = {}
    ranked = []
    for index, (job, key) in enumerate(zip(jobs, keys)):
        rank = 0 if key is None else seen.get(key, 0)
        if key is not None:
            seen[key] = rank + 1
        ranked.append((rank, index, job))
    return [job for _, _, job in sorted(ranked, key=lambda r: r[:2])]


def evaluation_splits(jobs: Sequence[Sequence[str]], summaries: Sequence) -> list[tuple[list[str], int]]:
    """Where a sweep varies only how a summary is evaluated yet distils several summaries.

    ``summaries``: each job's summary (e.g. its directory; ``None``: it distils none). Jobs
    whose overrides agree on every key outside ``evaluation.*`` are meant to evaluate one
    summary, but a distillation setting that follows an evaluation one (``distill.validate_lr:
    ${evaluation.lr}`` and the like) makes each value distil its own. Returns, per such group,
    the ``evaluation.*`` keys that vary in it and the number of summaries it would distil."""
    groups: dict[tuple, list] = {}
    for overrides, summary in zip(jobs, summaries):
        if summary is not None:
            rest = tuple(sorted(o.lstrip("+~") for o in overrides if not _key(o).startswith("evaluation.")))
            groups.setdefault(rest, []).append((overrides, summary))
    splits = []
    for members in groups.values():
        count = len({summary for _, summary in members})
        if count < 2:
            continue
        settings = [{_key(o): o.split("=", 1)[1] for o in overrides if _key(o).startswith("evaluation.")}
                    for overrides, _ in members]   # a key a point does not set reads as None
        keys = {k for setting in settings for k in setting}
        varying = sorted(k for k in keys if len({setting.get(k) for setting in settings}) > 1)
        splits.append((varying, count))
    return splits
