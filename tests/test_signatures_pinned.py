"""Run identity is pinned: a refactoring must not silently change where a run lives.

A run's directory is named by the signature of its resolved config (``td3.records.signature``),
its summary's by the signature of the summary's part of it (``td3.layout.summary_dir_for``),
its teacher's by the signature of the teacher's training config (``RunConfig.teacher``). Change any of them, by a
default, a key renamed, a config moved, or the hashing itself, and every published or
half-finished run is orphaned: a relaunched sweep reruns everything. So:

- ``PINNED`` holds, for representative command lines, the three signatures, the two
  directory names and a hash of the whole resolved config (which also catches a default
  that changes without entering a signature, e.g. a NON_RESULT_KEY);
- every published record (``results/paper/distill``) must still be found under its config;
- which keys enter which signature is checked leaf by leaf, so that the test fails for the
  right reason when the pins have to change.

A deliberate change of identity re-pins with ``python tests/test_signatures_pinned.py``
(prints ``PINNED`` as it is now), and says so in its commit.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "results" / "paper" / "distill"
#: results_dir comes from TD3_RESULTS_DIR: fixed here, so the whole config can be hashed.
RESULTS_ROOT = "/td3-results"

#: Command lines of ``python -m td3.distill`` (a sweep's grid point is one too).
CASES = {
    "defaults": [],
    "ml-100k td3": ["dataset=ml-100k", "tuning=none"],
    "ml-100k td3 paper": ["dataset=ml-100k", "evaluation.protocol=paper", "tuning=none"],
    "ml-100k td3 50x50": ["dataset=ml-100k", "summary.mu=50", "summary.zeta=50", "tuning=none"],
    "ml-100k td3 25x150": ["dataset=ml-100k", "summary.mu=25", "summary.zeta=150", "tuning=none"],
    "ml-100k td3 ranks 16": ["dataset=ml-100k", "summary.mu=50", "summary.zeta=50", "summary.d1=16", "summary.d2=16",
                             "tuning=none"],
    "ml-100k td3 seed 1": ["dataset=ml-100k", "seed=1", "tuning=none"],
    "ml-100k td3 trainable": ["dataset=ml-100k", "distill.inner.embedding=trainable"],
    "ml-100k td3 authors_code": ["dataset=ml-100k", "+experiment=authors_code"],
    "ml-100k td3 quick": ["dataset=ml-100k", "+experiment=quick", "tuning=none"],
    "ml-100k td3 no_fsa": ["dataset=ml-100k", "summary.mu=50", "summary.zeta=50", "+experiment=no_fsa", "tuning=none"],
    "ml-100k td3 4 learners": ["dataset=ml-100k", "summary.mu=50", "summary.zeta=50",
                               "evaluation.models=[sasrec,gru4rec,narm,bert4rec]", "tuning=none"],
    "ml-100k td3 several learners": ["dataset=ml-100k", "summary.mu=50", "summary.zeta=50",
                                     "evaluation.models=[sasrec,gru4rec,narm,bert4rec]",
                                     "distill.learners=[sasrec,gru4rec,narm,bert4rec]", "tuning=none"],
    "ml-100k farzi": ["dataset=ml-100k", "method=farzi", "tuning=none"],
    "ml-100k random": ["dataset=ml-100k", "method=random", "tuning=none"],
    "ml-100k longest": ["dataset=ml-100k", "method=longest", "tuning=none"],
    "ml-100k full": ["dataset=ml-100k", "method=full", "tuning=none"],
    # Table 2's and 3's runs: the reference scripts' settings (tuning=none)
    "magazine-2018 td3 10x10": ["dataset=magazine-2018", "summary.mu=10", "summary.zeta=10",
                                "distill.inner.batch_size=10", "tuning=none"],
    "magazine-2018 farzi": ["dataset=magazine-2018", "method=farzi", "tuning=none"],
    "magazine-2018 random": ["dataset=magazine-2018", "method=random", "tuning=none"],
    # td3's own settings for the dataset (conf/tuning/magazine-2018.yaml)
    "magazine-2018 td3 tuned": ["dataset=magazine-2018"],
    "ml-1m-slice td3": ["dataset=ml-1m-slice", "summary.mu=200", "summary.zeta=50", "tuning=none"],
    "ml-1m-slice longest": ["dataset=ml-1m-slice", "summary.mu=200", "summary.zeta=50", "method=longest",
                            "tuning=none"],
    "ml-1m-slice full": ["dataset=ml-1m-slice", "summary.mu=200", "summary.zeta=50", "method=full", "tuning=none"],
}

# Computed at commit 9cfb9f0, before issue 16's refactoring; config_sha256 re-pinned when
# distill.learners and then distill.outer.min_steps were added (keys at their neutral value:
# no signature moved); the magazine-2018 cases given tuning=none when conf/tuning/ came (the
# same signatures), and "magazine-2018 td3 tuned" pinned then; when td3's default inner item
# table became trainable, the cases of the replication's runs were given tuning=none (their
# settings: the same signatures) and "magazine-2018 td3 tuned" re-pinned (now trainable);
# config_sha256 re-pinned when distill.inner.learn_lr/lr_lr and then
# distill.inner.bidirectional_loss and then distill.validate_learners were added (neutral
# values: no signature moved), and when distill.snapshots was (a NON_RESULT_KEY).
PINNED = {
    'defaults': dict(
        signature='0f638a7930d4', run_dir='synthetic-td3-20x20-0f638a7930d4',
        summary_signature='12a303716c1a', summary_dir='synthetic-td3-20x20-12a303716c1a',
        teacher_signature='5496a8fa11fe', config_sha256='3c132ee800b3d8eb'),
    'ml-100k td3': dict(
        signature='d244c7b87716', run_dir='ml-100k-td3-30x50-d244c7b87716',
        summary_signature='3869cb027797', summary_dir='ml-100k-td3-30x50-3869cb027797',
        teacher_signature='270c2775b8b2', config_sha256='be05cde4f88173c3'),
    'ml-100k td3 paper': dict(
        signature='cbae468f0a29', run_dir='ml-100k-td3-30x50-cbae468f0a29',
        summary_signature='3869cb027797', summary_dir='ml-100k-td3-30x50-3869cb027797',
        teacher_signature='270c2775b8b2', config_sha256='0adfacde6dcf3598'),
    'ml-100k td3 50x50': dict(
        signature='64338bacfc0f', run_dir='ml-100k-td3-50x50-64338bacfc0f',
        summary_signature='1181fa2e66f4', summary_dir='ml-100k-td3-50x50-1181fa2e66f4',
        teacher_signature='270c2775b8b2', config_sha256='897d30f65c6214b5'),
    'ml-100k td3 25x150': dict(
        signature='90a611817b45', run_dir='ml-100k-td3-25x150-90a611817b45',
        summary_signature='cf9dca85813a', summary_dir='ml-100k-td3-25x150-cf9dca85813a',
        teacher_signature='29aec52370de', config_sha256='e5caa463d75cd9d7'),
    'ml-100k td3 ranks 16': dict(
        signature='555a58be09fd', run_dir='ml-100k-td3-50x50-555a58be09fd',
        summary_signature='31d6e0b20dbc', summary_dir='ml-100k-td3-50x50-31d6e0b20dbc',
        teacher_signature='270c2775b8b2', config_sha256='4d5efa8af666c060'),
    'ml-100k td3 seed 1': dict(
        signature='ce32207b7a9a', run_dir='ml-100k-td3-30x50-ce32207b7a9a',
        summary_signature='6c6f7d09c818', summary_dir='ml-100k-td3-30x50-6c6f7d09c818',
        teacher_signature='270c2775b8b2', config_sha256='1d4a0f57f46245ef'),
    'ml-100k td3 trainable': dict(
        signature='55262e656f36', run_dir='ml-100k-td3-30x50-55262e656f36',
        summary_signature='99f6c1c24b9a', summary_dir='ml-100k-td3-30x50-99f6c1c24b9a',
        teacher_signature='270c2775b8b2', config_sha256='4a973343f48f0378'),
    'ml-100k td3 authors_code': dict(
        signature='ad86c1506094', run_dir='ml-100k-td3-30x50-ad86c1506094',
        summary_signature='f8bfeffa2043', summary_dir='ml-100k-td3-30x50-f8bfeffa2043',
        teacher_signature='270c2775b8b2', config_sha256='ad6e34c254f5cae4'),
    'ml-100k td3 quick': dict(
        signature='e6be4cc7bad5', run_dir='ml-100k-td3-30x50-e6be4cc7bad5',
        summary_signature='a4df8415098b', summary_dir='ml-100k-td3-30x50-a4df8415098b',
        teacher_signature='b47c5b39339f', config_sha256='b5ad1c668dcf7ddd'),
    'ml-100k td3 no_fsa': dict(
        signature='a7530f0d1d82', run_dir='ml-100k-td3-50x50-a7530f0d1d82',
        summary_signature='22ab35f25176', summary_dir='ml-100k-td3-50x50-22ab35f25176',
        teacher_signature='270c2775b8b2', config_sha256='fb98b0eb630c1b07'),
    'ml-100k td3 4 learners': dict(
        signature='ffcd1ac6928f', run_dir='ml-100k-td3-50x50-ffcd1ac6928f',
        summary_signature='1181fa2e66f4', summary_dir='ml-100k-td3-50x50-1181fa2e66f4',
        teacher_signature='270c2775b8b2', config_sha256='a9771326d5638632'),
    'ml-100k td3 several learners': dict(
        signature='5c35ce13a9ce', run_dir='ml-100k-td3-50x50-5c35ce13a9ce',
        summary_signature='972c70af9a60', summary_dir='ml-100k-td3-50x50-972c70af9a60',
        teacher_signature='270c2775b8b2', config_sha256='ab0becca1a1f8fc1'),
    'ml-100k farzi': dict(
        signature='48b1969a330f', run_dir='ml-100k-farzi-30x50-48b1969a330f',
        summary_signature='4a823ba39b9d', summary_dir='ml-100k-farzi-30x50-4a823ba39b9d',
        teacher_signature='270c2775b8b2', config_sha256='f1b5263b098bad54'),
    'ml-100k random': dict(
        signature='0ad8247b1392', run_dir='ml-100k-random-30x50-0ad8247b1392',
        summary_signature='96a1ab80d033', summary_dir='ml-100k-random-30x50-96a1ab80d033',
        teacher_signature='270c2775b8b2', config_sha256='e44b0af69bbf7925'),
    'ml-100k longest': dict(
        signature='bec7bc796bd8', run_dir='ml-100k-longest-30x50-bec7bc796bd8',
        summary_signature='8d64f0e64e4f', summary_dir='ml-100k-longest-30x50-8d64f0e64e4f',
        teacher_signature='270c2775b8b2', config_sha256='6fd78b4bad208359'),
    'ml-100k full': dict(
        signature='c324ab98ee4c', run_dir='ml-100k-full-30x50-c324ab98ee4c',
        summary_signature='2a74886f4cf3', summary_dir='ml-100k-full-30x50-2a74886f4cf3',
        teacher_signature='270c2775b8b2', config_sha256='71ef5d4d61ca30cf'),
    'magazine-2018 td3 10x10': dict(
        signature='97f934055b7a', run_dir='magazine-2018-td3-10x10-97f934055b7a',
        summary_signature='a90ed0d9df8b', summary_dir='magazine-2018-td3-10x10-a90ed0d9df8b',
        teacher_signature='b2d83b1070ab', config_sha256='0de3b09e387519a1'),
    'magazine-2018 farzi': dict(
        signature='d873b7b0f5dc', run_dir='magazine-2018-farzi-30x20-d873b7b0f5dc',
        summary_signature='723a2fc8926d', summary_dir='magazine-2018-farzi-30x20-723a2fc8926d',
        teacher_signature='4c45117e1018', config_sha256='6f789b0b7709dd09'),
    'magazine-2018 random': dict(
        signature='23184f93aab5', run_dir='magazine-2018-random-30x20-23184f93aab5',
        summary_signature='d10fe8fb7f16', summary_dir='magazine-2018-random-30x20-d10fe8fb7f16',
        teacher_signature='4c45117e1018', config_sha256='882e83a182cd5495'),
    'magazine-2018 td3 tuned': dict(
        signature='d63a6a904ed4', run_dir='magazine-2018-td3-30x20-d63a6a904ed4',
        summary_signature='bb77cdf93755', summary_dir='magazine-2018-td3-30x20-bb77cdf93755',
        teacher_signature='4c45117e1018', config_sha256='d5400f27102b8526'),
    'ml-1m-slice td3': dict(
        signature='1758a55b05da', run_dir='ml-1m-slice-td3-200x50-1758a55b05da',
        summary_signature='09a7abbbbdae', summary_dir='ml-1m-slice-td3-200x50-09a7abbbbdae',
        teacher_signature='a8d69d40ce1a', config_sha256='6237a7f45c956e6b'),
    'ml-1m-slice longest': dict(
        signature='fa71a1a61bfd', run_dir='ml-1m-slice-longest-200x50-fa71a1a61bfd',
        summary_signature='89707c2465a7', summary_dir='ml-1m-slice-longest-200x50-89707c2465a7',
        teacher_signature='a8d69d40ce1a', config_sha256='9ab26f7dd6487198'),
    'ml-1m-slice full': dict(
        signature='7d15b031cbf0', run_dir='ml-1m-slice-full-200x50-7d15b031cbf0',
        summary_signature='9dda4424a117', summary_dir='ml-1m-slice-full-200x50-9dda4424a117',
        teacher_signature='a8d69d40ce1a', config_sha256='00b45df325564aa3'),
}
PUBLISHED_CASES = (
    'ml-100k td3', 'ml-100k td3 paper', 'ml-100k td3 50x50', 'ml-100k td3 25x150',
    'ml-100k td3 ranks 16', 'ml-100k td3 seed 1', 'ml-100k td3 trainable', 'ml-100k td3 no_fsa',
    'ml-100k td3 4 learners', 'ml-100k td3 several learners', 'ml-100k farzi', 'ml-100k random',
    'ml-100k longest', 'ml-100k full', 'magazine-2018 td3 10x10', 'magazine-2018 farzi',
    'magazine-2018 random', 'magazine-2018 td3 tuned', 'ml-1m-slice td3', 'ml-1m-slice longest',
    'ml-1m-slice full',
)

#: Cases that are published runs: their pinned directory must be in results/paper/distill.
PUBLISHED_CASES = (
    'ml-100k td3', 'ml-100k td3 paper', 'ml-100k td3 50x50', 'ml-100k td3 25x150',
    'ml-100k td3 ranks 16', 'ml-100k td3 seed 1', 'ml-100k td3 trainable', 'ml-100k td3 no_fsa',
    'ml-100k td3 4 learners', 'ml-100k td3 several learners', 'ml-100k farzi', 'ml-100k random',
    'ml-100k longest', 'ml-100k full', 'magazine-2018 td3 10x10', 'magazine-2018 farzi',
    'magazine-2018 random', 'magazine-2018 td3 tuned', 'ml-1m-slice td3', 'ml-1m-slice longest',
    'ml-1m-slice full',
)

#: What each signature depends on (top-level config keys), as the records on disk were made.
SUMMARY_KEYS = ("method", "seed", "teacher_seed", "max_len", "dataset", "model", "train", "summary", "distill")
TEACHER_KEYS = ("teacher_seed", "max_len", "dataset", "model", "train", "eval")
NON_RESULT = ("results_dir", "progress", "threads", "device", "eval.batch_size", "sweep", "hydra", "distill.snapshots")


# ------------------------------------------------ the project's functions used
def teacher_config(cfg: dict) -> dict:
    """The config of the full-data training run that gives a distillation its teacher."""
    from td3.config import RunConfig

    return RunConfig.of(cfg).teacher()


def model_config(name: str, cfg: dict) -> dict:
    """Options of an evaluation learner (full-data runs train one per learner and seed)."""
    from td3.config import RunConfig

    return RunConfig.of(cfg).learner(name)


# ------------------------------------------------------------------ helpers
def compose(overrides: list[str]) -> dict:
    """The resolved config ``python -m td3.distill <overrides>`` runs: Hydra's composition of
    conf/distill.yaml without the ``hydra`` node, every interpolation resolved (td3.cli's
    ``hydra_command``; the sweeper's ``_resolve`` and ``td3.config.compose_config`` agree)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from td3.cli import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return OmegaConf.to_container(hydra_compose("distill", overrides=list(overrides)), resolve=True)


def identity(cfg: dict) -> dict:
    from td3 import layout, records

    sig = records.signature(cfg)
    summary_dir, summary_sig = layout.summary_dir_for(cfg)
    return {"signature": sig, "run_dir": layout.run_dir_for(cfg, sig).name,
            "summary_signature": summary_sig, "summary_dir": summary_dir.name,
            "teacher_signature": records.signature(teacher_config(cfg)),
            "config_sha256": hashlib.sha256(records.canonical_json(cfg).encode()).hexdigest()[:16]}


@pytest.fixture
def results_root(monkeypatch):
    monkeypatch.setenv("TD3_RESULTS_DIR", RESULTS_ROOT)
    return RESULTS_ROOT


# --------------------------------------------------------- (a) pinned cases
def test_every_case_is_pinned():
    assert set(PINNED) == set(CASES)
    assert set(PUBLISHED_CASES) <= set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_identity_is_pinned(case, results_root):
    cfg = compose(CASES[case])
    assert cfg["results_dir"] == results_root
    assert identity(cfg) == PINNED[case], f"{case}: run identity changed ({' '.join(CASES[case])})"


@pytest.mark.parametrize("case", PUBLISHED_CASES)
def test_pinned_published_cases_are_on_disk(case):
    """Anchors the pins to real results: these command lines made the published runs."""
    assert (PUBLISHED / PINNED[case]["run_dir"] / "record.json").is_file()


def test_a_sweeps_grid_point_is_the_same_run_as_its_command_line(results_root):
    """``+sweep=<name>`` adds the sweep's name (a NON_RESULT key) and its grid: no other change."""
    point = ["dataset=ml-100k", "summary.mu=30", "summary.zeta=50", "method=td3", "evaluation.protocol=scratch",
             "seed=0", "tuning=none"]
    in_sweep, alone = compose([*point, "+sweep=table3"]), compose(point)
    assert in_sweep["sweep"] == {"name": "table3"}
    assert identity(in_sweep)["signature"] == identity(alone)["signature"] == PINNED["ml-100k td3"]["signature"]
    assert {k: v for k, v in in_sweep.items() if k != "sweep"} == alone


def test_the_projects_own_composition_agrees(results_root):
    """Sweeps (Ray Tune), the audit and publishing compose with ``td3.config.compose_config``."""
    from td3.config import compose_config

    for case in ("defaults", "ml-100k td3 authors_code", "magazine-2018 td3 10x10"):
        assert compose_config(CASES[case]) == compose(CASES[case]), case


# ----------------------------------------------- which keys enter a signature
def leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def changed(cfg: dict, dotted: str) -> dict:
    """A copy of ``cfg`` with one leaf set to another value of its kind."""
    cfg = json.loads(json.dumps(cfg))
    *path, last = dotted.split(".")
    node = cfg
    for key in path:
        node = node[key]
    value = node[last]
    if isinstance(value, bool):
        node[last] = not value
    elif isinstance(value, (int, float)):
        node[last] = value + 1
    elif isinstance(value, str):
        node[last] = value + "-other"
    elif isinstance(value, list):
        node[last] = [*value, value[-1] if value else 1]
    else:  # None, {}
        node[last] = 1
    return cfg


def under(dotted: str, keys: tuple[str, ...]) -> bool:
    return any(dotted == k or dotted.startswith(k + ".") for k in keys)


@pytest.mark.parametrize("overrides", [CASES["defaults"], CASES["ml-100k full"]], ids=["td3", "full"])
def test_each_setting_enters_exactly_the_signatures_it_should(overrides, results_root):
    """Changing one leaf of the config changes the run's signature unless the leaf is a
    NON_RESULT key, the summary's when it is under a summary key, the teacher's when it is
    under a teacher key (the seed is not one: seeds share a teacher)."""
    from td3 import layout, records

    base = compose(overrides)

    def sigs(cfg: dict) -> tuple[str, str, str]:
        return records.signature(cfg), layout.summary_dir_for(cfg)[1], records.signature(teacher_config(cfg))

    before = sigs(base)
    wrong = []
    for leaf in leaves(base):
        after = sigs(changed(base, leaf))
        expected = (not under(leaf, NON_RESULT),
                    under(leaf, SUMMARY_KEYS) and not under(leaf, NON_RESULT),
                    under(leaf, TEACHER_KEYS) and not under(leaf, NON_RESULT))
        if leaf in records.INERT_UNLESS and not records.INERT_UNLESS[leaf](base):
            expected = (False, False, False)  # it computes nothing while its condition is unmet
        seen = tuple(a != b for a, b in zip(before, after))
        if seen != expected:
            wrong.append(f"{leaf}: (run, summary, teacher) changed {seen}, expected {expected}")
    assert not wrong, "\n".join(wrong)
    assert len(list(leaves(base))) > 50  # the walk saw the whole config


# ------------------------------------------------------ (b) published records
def published_records() -> list[Path]:
    return sorted(PUBLISHED.glob("*/record.json"))


def test_published_records_are_found_under_their_config():
    """Each published run: its config's signature is the one it was written under, its
    directory is the one its config names, and so are its summary's and teacher's."""
    from td3 import layout, records

    paths = published_records()
    assert len(paths) >= 100, f"only {len(paths)} published distill records"
    problems = []
    for path in paths:
        record, run_dir = json.loads(path.read_text()), path.parent
        cfg, sig = record["config"], record["signature"]
        name = run_dir.name
        if records.signature(cfg) != sig:
            problems.append(f"{name}: signature(config) = {records.signature(cfg)}, record says {sig}")
        if not name.endswith("-" + sig) or layout.run_dir_for(cfg, sig).name != name:
            problems.append(f"{name}: its config names the directory {layout.run_dir_for(cfg, sig).name}")
        if json.loads(records.read_sealed(run_dir, "config.json")) != cfg:  # left to the record when published
            problems.append(f"{name}: config.json differs from the record's config")
        if "signature" in (record.get("summary") or {}):
            if layout.summary_dir_for(cfg)[1] != record["summary"]["signature"]:
                problems.append(f"{name}: summary signature {layout.summary_dir_for(cfg)[1]}, "
                                f"record says {record['summary']['signature']}")
        if record.get("teacher") and records.signature(teacher_config(cfg)) != record["teacher"]["signature"]:
            problems.append(f"{name}: teacher signature {records.signature(teacher_config(cfg))}, "
                            f"record says {record['teacher']['signature']}")
        if cfg["method"] == "full":   # one full-data training run per learner and seed
            expected = {f"{cfg['dataset']['name']}-{m}-"
                        + records.signature({**teacher_config(cfg), "seed": s, "model": model_config(m, cfg)})
                        for m in cfg["evaluation"]["models"] for s in cfg["evaluation"]["seeds"]}
            if {Path(r).name for r in record["train_runs"]} != expected:
                problems.append(f"{name}: train runs {record['train_runs']}, its config names {sorted(expected)}")
    assert not problems, f"{len(problems)} of {len(paths)} records:\n" + "\n".join(problems)


# ------------------------------------------------------------------ re-pin
if __name__ == "__main__":
    import os

    sys.path.insert(0, str(REPO))
    os.environ["TD3_RESULTS_DIR"] = RESULTS_ROOT
    pins = {case: identity(compose(overrides)) for case, overrides in CASES.items()}
    print("PINNED = {")
    for case, pin in pins.items():
        print(f"    {case!r}: dict(\n"
              f"        signature={pin['signature']!r}, run_dir={pin['run_dir']!r},\n"
              f"        summary_signature={pin['summary_signature']!r}, summary_dir={pin['summary_dir']!r},\n"
              f"        teacher_signature={pin['teacher_signature']!r}, config_sha256={pin['config_sha256']!r}),")
    print("}")
    on_disk = tuple(case for case, pin in pins.items() if (PUBLISHED / pin["run_dir"] / "record.json").is_file())
    print("PUBLISHED_CASES = (")  # laid out as in this file, four to a line: replaces it whole
    for i in range(0, len(on_disk), 4):
        print("    " + " ".join(f"{case!r}," for case in on_disk[i:i + 4]))
    print(")")
