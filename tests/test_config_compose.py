"""Every overlay and every sweep point composes into a config the run would accept.

Nothing is trained and no data is read: each config is composed with Hydra's compose API as
the command line composes it, resolved, and given to the run's check
(``td3.config.RunConfig.check``), which refuses
impossible settings (Tucker ranks above the summary's size, an inner batch larger than the
summary, an unknown learner, ...) from the config alone. A sweep point that would end in
``td3: error`` as soon as its job started (after its wait in a cluster's queue) fails here,
in seconds.

The files are globbed, so a new ``conf/experiment/*.yaml`` or ``sweeps/*.yaml`` is tested
without touching this file. Overlays are added with ``+experiment=<name>`` (``experiment``
is not in conf/distill.yaml's defaults list); sweeps are expanded by the project's own
``td3.tune.grid_jobs`` (``td3.grid.expand`` over the sweep file's params and grid, the
expansion the Hydra sweeper and Ray Tune share), without launching anything.

Points that differ only in ``seed`` compose alike (``seed`` feeds the seeds, nothing
the check reads but ``evaluation.seeds`` being non-empty), so one seed of each is
composed and checked; the test asserts the seeds multiply the grid exactly.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
#: Datasets an overlay is tried on: the default and those the paper's sweeps use.
OVERLAY_DATASETS = ("synthetic", "ml-100k", "magazine-2018", "ml-1m-slice")


@pytest.fixture(autouse=True)
def results_root(monkeypatch, tmp_path):
    """results_dir comes from TD3_RESULTS_DIR: never the caller's."""
    monkeypatch.setenv("TD3_RESULTS_DIR", str(tmp_path / "runs"))


@contextmanager
def composer():
    """Hydra initialised on conf/; yields ``compose(overrides)`` -> the resolved dict."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from td3.cli import CONF_DIR

    assert Path(CONF_DIR).resolve() == CONF.resolve()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        yield lambda overrides: OmegaConf.to_container(compose("distill", overrides=list(overrides)), resolve=True)


@pytest.fixture
def hydra_conf():
    with composer() as compose:
        yield compose


def check(cfg: dict) -> None:
    """The run's refusal of impossible settings (a TD3Error), from the config alone."""
    from td3.config import RunConfig

    RunConfig.of(cfg).check()


def methods() -> tuple[str, ...]:
    from td3.config import METHODS

    return tuple(METHODS)


MISSING = "<missing>"


def select(cfg: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(cfg, dict) or key not in cfg:
            return MISSING
        cfg = cfg[key]
    return cfg


@functools.lru_cache(maxsize=1)
def override_parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


@functools.lru_cache(maxsize=None)
def parsed(override: str):
    """Hydra's reading of one override (cached: the parser is slow, the points of a grid
    share most of their overrides)."""
    return override_parser().parse_override(override)


def problems_with(cfg: dict, overrides: list[str]) -> list[str]:
    """What in ``cfg`` contradicts the overrides it was composed from: a value they set that
    did not arrive (a preset or an overlay overwriting a sweep's value, a misspelt key)."""
    found = []
    if cfg.get("method") not in methods():
        found.append(f"method={cfg.get('method')!r}")
    if not (cfg.get("dataset") or {}).get("name"):
        found.append("no dataset.name")
    for o in map(parsed, overrides):
        key = o.get_key_element()
        if key.startswith(("+", "~")):
            continue
        if (CONF / key).is_dir():   # a config group: the option's name lands in <group>.name
            if key in ("dataset", "model") and cfg[key]["name"] != o.value():
                found.append(f"{key}={o.value()} composed {key}.name={cfg[key]['name']!r}")
            continue
        if select(cfg, key) != o.value():
            found.append(f"{key}={o.value()!r} composed {key}={select(cfg, key)!r}")
    return found


# ------------------------------------------------------------------ overlays
def test_the_globs_found_the_config_files():
    assert EXPERIMENTS and SWEEPS and "synthetic" in DATASETS and "sasrec" in MODELS


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_overlay_composes_and_checks(experiment, hydra_conf):
    """The overlay on each dataset: its settings arrive (a preset does not undo them) and
    the result passes the run's check."""
    from omegaconf import OmegaConf

    overlay = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml"))
    assert overlay, f"{experiment}.yaml sets nothing"
    base = hydra_conf([])
    for dataset in OVERLAY_DATASETS:
        cfg = hydra_conf([f"dataset={dataset}", f"+experiment={experiment}"])
        assert cfg["dataset"]["name"] == dataset
        lost = [f"{key}={want!r} became {select(cfg, key)!r}" for key, want in flatten(overlay).items()
                if select(cfg, key) != want]
        assert not lost, f"+experiment={experiment} dataset={dataset}: " + "; ".join(lost)
        check(cfg)
    assert hydra_conf([f"+experiment={experiment}"]) != base, f"{experiment} changes nothing"


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("option", [f"dataset={d}" for d in DATASETS] + [f"model={m}" for m in MODELS])
def test_every_group_option_composes_and_checks(option, hydra_conf):
    """Each dataset (with its preset) and each learner, at its defaults, for TD3 (the
    method with the most constraints) and Full-Data."""
    for method in ("td3", "full"):
        cfg = hydra_conf([option, f"method={method}"])
        assert not problems_with(cfg, [option, f"method={method}"])
        check(cfg)


# -------------------------------------------------------------------- sweeps
def seedless(job: list[str]) -> tuple[str, ...]:
    return tuple(o for o in job if not o.startswith("seed="))


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_point_of_the_sweep_composes_and_checks(sweep):
    from td3.tune import grid_jobs

    name, jobs = grid_jobs([f"+sweep={sweep}"])   # (composes on its own: before ours)
    assert name == sweep, f"sweeps/{sweep}.yaml names its sweep {name!r} (its results go to sweeps/{name}/)"
    assert jobs, f"{sweep}: the grid is empty"
    assert all(f"+sweep={sweep}" in job and any(o.startswith("seed=") for o in job) for job in jobs)
    points = list(dict.fromkeys(seedless(job) for job in jobs))
    seeds = {o for job in jobs for o in job if o.startswith("seed=")}
    assert len(jobs) == len(points) * len(seeds), f"{sweep}: the seeds are not a full axis of the grid"

    failures = []
    with composer() as compose:
        for point in points:
            failures += point_problems(compose, sweep, [*point, sorted(seeds)[0]])
    assert not failures, f"{len(failures)} of {len(points)} points of {sweep}:\n" + "\n".join(failures)


def point_problems(compose, sweep: str, overrides: list[str]) -> list[str]:
    from td3.errors import TD3Error

    failures = []
    try:
        cfg = compose(overrides)
    except Exception as exc:  # noqa: BLE001 - every point is reported, not the first
        return [f"{' '.join(overrides)}: does not compose: {str(exc).splitlines()[0]}"]
    failures += [f"{' '.join(overrides)}: {p}" for p in problems_with(cfg, overrides)]
    if (cfg.get("sweep") or {}).get("name") != sweep:
        failures.append(f"{' '.join(overrides)}: sweep.name={cfg.get('sweep')}")
    try:
        check(cfg)
    except TD3Error as exc:
        failures.append(f"{' '.join(overrides)}: {exc}")
    return failures
