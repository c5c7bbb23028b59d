"""A run's configuration, typed: the resolved Hydra dict read once, at the boundary.

Hydra composes ``conf/`` into a plain dict (the YAML files own every default); ``RunConfig.of``
turns it into frozen parts, one per config group, and ``check()`` refuses every impossible
setting at once, before any work starts. The engine, full-data training and the summary
training read attributes of these parts, never keys of the dict.

The dict itself stays the run's identity: ``raw`` is what ``td3.records.signature`` hashes
and what the record stores, byte for byte as before the typed parts existed. A field with a
default here is a key added after runs existed (``td3.records.NEUTRAL_VALUES``): the default
is the value that computes what those runs did, so their configs still load.

Standard library only (the checks that need a learner's or a protocol's definition import
them when they run), so that the sweeper and the analysis can read configs cheaply.
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
MODEL_CONF_DIR = Path(CONF_DIR) / "model"   # evaluation learners' options, conf/model/<name>.yaml

#: Methods that learn a summary, and the summary's parametrisation (docs/method.md, "The summary").
SUMMARY_METHODS = {"td3": "tucker", "farzi": "farzi", "naive": "naive"}
METHODS = (*SUMMARY_METHODS, "random", "longest", "full")

#: Top-level keys that are not settings of the run (Hydra's own, the sweep's name).
_NOT_SETTINGS = ("hydra", "sweep")


def _build(cls, values: Mapping[str, Any], where: str, **parts):
    """``cls`` from a config group: every key known, every field without a default present."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a group of settings, got {values!r}")
    names = {f.name for f in dataclasses.fields(cls)} - {"raw"}  # raw: the dict itself, not a setting
    unknown = sorted(set(values) - names - set(parts))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k not in parts}
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in kwargs and f.name not in parts
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing setting(s) {', '.join(missing)}")
    return cls(**kwargs, **parts)


def compose_config(overrides: list[str] | tuple[str, ...] = (), hydra: bool = False, name: str = "distill") -> dict:
    """The resolved config of ``conf/<name>.yaml`` under ``overrides``, as the command line
    composes it (with the unresolved ``hydra`` node if asked): the one way outside a Hydra
    app to turn overrides into a run's config (Ray Tune's trials, publishing, the audit)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=hydra)
    return OmegaConf.to_container(cfg, resolve=not hydra)


# ----------------------------------------------------------------- parts
@dataclass(frozen=True)
class Ranking:
    """``eval``: how learners are ranked against the held-out items (docs/protocol.md)."""
    protocols: tuple[str, ...]
    exclude_history: bool
    batch_size: int


@dataclass(frozen=True)
class Named:
    """A group chosen by name with free options: ``dataset`` and ``model``."""
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, values: Mapping[str, Any], where: str) -> "Named":
        if not isinstance(values, Mapping) or "name" not in values:
            raise ConfigError(f"{where}: expected a group with a name, got {values!r}")
        return cls(values["name"], {k: v for k, v in values.items() if k != "name"})

    def as_dict(self) -> dict:
        return {"name": self.name, **self.options}


def dataset_options(dataset: Named | Mapping[str, Any]) -> dict:
    """What ``td3.data.load_dataset`` takes besides the name: the set options of the group."""
    options = dataset.options if isinstance(dataset, Named) else {k: v for k, v in dataset.items() if k != "name"}
    return {k: v for k, v in options.items() if v is not None}


def model_options(model: Named | Mapping[str, Any]) -> dict:
    """What ``td3.models.build_model`` takes besides the name and the catalogue's size."""
    return dict(model.options) if isinstance(model, Named) else {k: v for k, v in model.items() if k != "name"}


@dataclass(frozen=True)
class Training:
    """``train``: full-data training of a learner (teacher, init pool, Full-Data)."""
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    patience: int
    select_protocol: str
    select_metric: str
    pool_epochs: tuple[int, int]
    stride: int | None = None


@dataclass(frozen=True)
class SummaryShape:
    """``summary``: μ sequences of ζ positions; Tucker ranks d1, d2; Farzi's latent width."""
    mu: int
    zeta: int
    d1: int
    d2: int
    latent_dim: int


@dataclass(frozen=True)
class Inner:
    """``distill.inner``: the learner's training on the summary inside an outer step."""
    lr: float
    weight_decay: float
    optimizer: str                   # adam | sgd
    batch_size: int                  # synthetic sequences per inner step
    alt: bool                        # augmented learner training
    alt_low: int
    embedding: str                   # frozen | trainable: the learner's item table inside the loop
    dropout: bool
    backend: str                     # func | higher
    momentum: float = 0.0            # sgd only
    alt_weight: float = 1.0          # ALT term's weight: (last + w·alt) / (1 + w)
    order: str = "shuffled"          # shuffled | fixed
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    learn_lr: bool = False           # η learned with the summary, as log η (docs/method.md, "A learned inner learning rate")
    lr_lr: float = 0.01              # the outer Adam's step on log η
    bidirectional_loss: str = "cloze"  # cloze | prefix: BERT4Rec's loss on a summary (docs/method.md, "The inner loss and ALT")

    @property
    def frozen_embedding(self) -> bool:
        return self.embedding == "frozen"

    def problems(self) -> list[str]:
        p = []
        if self.optimizer not in ("adam", "sgd"):
            p.append(f"distill.inner.optimizer={self.optimizer!r}: expected adam or sgd")
        if self.backend not in ("func", "higher"):
            p.append(f"distill.inner.backend={self.backend!r}: expected func or higher")
        if self.order not in ("shuffled", "fixed"):
            p.append(f"distill.inner.order={self.order!r}: expected shuffled or fixed")
        if self.bidirectional_loss not in ("cloze", "prefix"):
            p.append(f"distill.inner.bidirectional_loss={self.bidirectional_loss!r}: expected cloze or prefix")
        if self.embedding not in ("frozen", "trainable"):
            p.append(f"distill.inner.embedding={self.embedding!r}: expected frozen or trainable")
        if self.alt_weight < 0:
            p.append(f"distill.inner.alt_weight={self.alt_weight} must be >= 0")
        if not self.weight_decay >= 0:
            p.append(f"distill.inner.weight_decay={self.weight_decay} must be >= 0")
        if not self.momentum >= 0:
            p.append(f"distill.inner.momentum={self.momentum} must be >= 0")
        if self.learn_lr and self.backend != "func":
            p.append(f"distill.inner.learn_lr=true needs distill.inner.backend=func (got {self.backend!r})")
        if self.learn_lr and not self.lr_lr > 0:
            p.append(f"distill.inner.lr_lr={self.lr_lr} must be > 0 with distill.inner.learn_lr=true")
        if not self.lr > 0 or self.batch_size < 1:
            p.append(f"distill.inner.lr={self.lr} must be > 0 and distill.inner.batch_size={self.batch_size} >= 1")
        return p

    def check(self) -> "Inner":
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))
        return self


@dataclass(frozen=True)
class Outer:
    """``distill.outer``: the summary's own optimisation."""
    epochs: int
    batch_size: int                  # real next-item examples per outer step
    lr: float
    weight_decay: float
    clip: float
    fsa: bool
    fsa_weight: float
    ce_weight: float
    learner_dropout: bool
    min_steps: int = 0               # at least this many outer steps: whole epochs added to reach it

    def schedule(self, batches_per_epoch: int) -> tuple[int, int]:
        """(outer epochs, outer steps) over real data of ``batches_per_epoch`` batches: a small
        dataset has few batches per epoch, so ``min_steps`` adds whole epochs
        (docs/method.md, "The outer optimiser")."""
        epochs = max(self.epochs, -(-self.min_steps // batches_per_epoch))
        return epochs, epochs * batches_per_epoch


@dataclass(frozen=True)
class Distill:
    """``distill``: the bi-level loop (docs/method.md, "The bi-level loop")."""
    steps: int                       # N: inner steps drawn from U(W, N)
    window: int                      # W: the differentiable last inner steps
    init: str                        # per_step | per_epoch
    validate_every: int
    validate_epochs: int
    validate_protocol: str
    validate_batch_size: int
    validate_lr: float
    validate_weight_decay: float
    checkpoint_every: int
    inner: Inner
    outer: Outer
    init_from: str = "pool"          # pool | scratch
    sampled_items: int = 0           # 0: every item (td3.candidates)
    learners: tuple[str, ...] = ()   # the inner learners drawn from, one per outer step; (): the model alone
    validate_learners: str = "model"  # model | all: the run's model validates S, or every inner learner (their mean)
    snapshots: bool = False          # keep S at every validation (summary_dir/snapshots/): selection rules compared afterwards
    average_last: float = 0.0        # > 0: keep the mean of the summaries validated in this last fraction of the outer loop

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> "Distill":
        if not isinstance(values, Mapping):
            raise ConfigError(f"distill: expected a group of settings, got {values!r}")
        return _build(cls, values, "distill", inner=_build(Inner, values.get("inner", {}), "distill.inner"),
                      outer=_build(Outer, values.get("outer", {}), "distill.outer"))


@dataclass(frozen=True)
class Evaluation:
    """``evaluation``: the learners trained on the result and how (docs/method.md, "Using a summary")."""
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    protocol: str                    # scratch | paper
    select: str                      # best_valid | last
    eval_every: int = 1


# ------------------------------------------------------------------ runs
@dataclass(frozen=True, kw_only=True)
class _Run:
    """What every run has: a learner trained on a dataset, somewhere, by some process."""
    seed: int
    max_len: int
    results_dir: str
    dataset: Named
    model: Named
    train: Training
    eval: Ranking
    device: str | None = None
    threads: int | None = None
    progress: bool = True
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, cfg: Mapping[str, Any]):
        """The typed parts of a resolved config dict (a typed config is returned as it is)."""
        if isinstance(cfg, cls):
            return cfg
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"a run's config must be a mapping of settings, got {type(cfg).__name__}")
        settings = {k: v for k, v in cfg.items() if k not in _NOT_SETTINGS}
        return _build(cls, settings, "config", **cls._parts(cfg), raw=dict(cfg))

    @classmethod
    def _parts(cls, cfg: Mapping[str, Any]) -> dict:
        """The config groups, each read into its typed part."""
        return dict(dataset=Named.of(cfg.get("dataset"), "dataset"), model=Named.of(cfg.get("model"), "model"),
                    train=_build(Training, cfg.get("train", {}), "train"),
                    eval=_build(Ranking, cfg.get("eval", {}), "eval"))


@dataclass(frozen=True, kw_only=True)
class TrainRun(_Run):
    """A full-data training run (``python -m td3.train``): the teacher and the init pool."""

    def problems(self, seed_key: str = "seed") -> list[str]:
        """``seed_key``: the config key its seed came from (a distillation's ``teacher_seed``)."""
        from .evaluate import PROTOCOLS, protocol_problems  # the protocols' definitions

        t, p = self.train, []
        if self.max_len < 2:
            p.append(f"max_len={self.max_len} must be >= 2")
        if t.epochs < 1:
            p.append(f"train.epochs={t.epochs} must be >= 1")
        if t.batch_size < 1:
            p.append(f"train.batch_size={t.batch_size} must be >= 1")
        if not t.lr > 0:
            p.append(f"train.lr={t.lr} must be > 0")
        if not t.weight_decay >= 0:
            p.append(f"train.weight_decay={t.weight_decay} must be >= 0")
        p += seed_problems(seed_key, self.seed)
        p += learner_problems(self.model.name, self.model.options, self.max_len)
        if t.stride is not None and not 1 <= t.stride <= self.max_len:
            p.append(f"train.stride={t.stride} must be in [1, max_len={self.max_len}]")
        p += protocol_problems(self.eval.protocols)
        if t.select_protocol not in PROTOCOLS:
            p += protocol_problems([t.select_protocol], "train.select_protocol")
        pool = list(t.pool_epochs) if isinstance(t.pool_epochs, (list, tuple)) else [t.pool_epochs]
        if not (len(pool) == 2 and all(isinstance(e, int) and not isinstance(e, bool) for e in pool)
                and 1 <= pool[0] <= pool[1]):
            p.append(f"train.pool_epochs={pool} must be [first, last] with 1 <= first <= last")
        return p

    def check(self) -> "TrainRun":
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))
        return self


@dataclass(frozen=True, kw_only=True)
class RunConfig(_Run):
    """One distillation run (``python -m td3.distill``): a method at one seed on one dataset.
    ``seed`` is the distillation's (summary init, batches, M, pool draws)."""
    method: str
    teacher_seed: int                # seed of the full-data run giving the teacher and init pool
    summary: SummaryShape
    distill: Distill
    evaluation: Evaluation

    @classmethod
    def _parts(cls, cfg: Mapping[str, Any]) -> dict:
        return dict(super()._parts(cfg), summary=_build(SummaryShape, cfg.get("summary", {}), "summary"),
                    distill=Distill.of(cfg.get("distill", {})),
                    evaluation=_build(Evaluation, cfg.get("evaluation", {}), "evaluation"))

    # ---------------------------------------------------------- derived
    @property
    def distils(self) -> bool:
        """Whether the method learns a summary (the bi-level settings bind only then)."""
        return self.method in SUMMARY_METHODS

    def teacher(self) -> dict:
        """The full-data run giving the teacher and the init pool, as the dict it is identified by."""
        c = self.raw
        return {"seed": c["teacher_seed"], "max_len": c["max_len"], "dataset": c["dataset"],
                "model": c["model"], "train": c["train"], "eval": c["eval"],
                "results_dir": c["results_dir"], "device": c.get("device"), "threads": c.get("threads"),
                "progress": c.get("progress", True)}

    @property
    def inner_learners(self) -> tuple[str, ...]:
        """The architectures the outer steps train in their inner loops, the run's model first
        (its teacher's item table is the Tucker summary's V and its learner validates)."""
        rest = tuple(n for n in self.distill.learners if n != self.model.name)
        return (self.model.name, *rest)

    @property
    def teachers_needed(self) -> tuple[str, ...]:
        """The learners whose full-data runs (at ``teacher_seed``) this run reads: every inner
        learner of a distillation (each brings its teacher and init pool), the run's model
        alone where the paper's protocol evaluates with its teacher's item table, else none."""
        if self.distils:
            return self.inner_learners
        return (self.model.name,) if self.evaluation.protocol == "paper" else ()

    def learner(self, name: str) -> dict:
        """Options of an evaluation learner: the distillation learner's own, or conf/model/<name>.yaml."""
        if name == self.model.name:
            return self.model.as_dict()
        return learner_options(name)

    # ----------------------------------------------------------- checks
    def check(self) -> "RunConfig":
        """Every impossible setting, in one error, before any work starts."""
        s, p = self.summary, []
        if self.method not in METHODS:
            p.append(f"method={self.method!r}: expected one of {', '.join(METHODS)}")
        if s.zeta < 3:
            p.append(f"summary.zeta={s.zeta} must be >= 3")
        if s.mu < 1:
            p.append(f"summary.mu={s.mu} must be >= 1")
        if self.method == "td3" and not (1 <= s.d1 <= s.mu and 1 <= s.d2 <= s.zeta):
            p.append(f"Tucker ranks d1={s.d1}, d2={s.d2} must be >= 1 and at most mu={s.mu}, zeta={s.zeta}")
        if self.method == "farzi" and s.latent_dim < 1:
            p.append(f"summary.latent_dim={s.latent_dim} must be >= 1")
        p += seed_problems("seed", self.seed) + seed_problems("teacher_seed", self.teacher_seed)
        for seed in self.evaluation.seeds:
            p += seed_problems("evaluation.seeds", seed)
        p += self._evaluation_problems()
        # The bi-level settings only bind the methods that distil: Random, Longest and Full-Data
        # never read them, so a grid that shares them across methods must not fail there.
        if self.distils:
            p += self._bilevel_problems()
        if self.teachers_needed or self.method == "full":
            # the full-data runs it trains on demand (teacher, Full-Data): refused now, not
            # after the data is loaded
            p += TrainRun.of(self.teacher()).problems(seed_key="teacher_seed")
        if p:
            raise ConfigError("; ".join(dict.fromkeys(p)))  # a problem both checks find, once
        return self

    def _evaluation_problems(self) -> list[str]:
        """The learners trained on the result: refused now rather than after a distillation."""
        ev, p = self.evaluation, []
        if ev.protocol not in ("scratch", "paper"):
            p.append(f"evaluation.protocol={ev.protocol!r}: expected scratch or paper")
        unknown = [n for n in ev.models if n != self.model.name and not (MODEL_CONF_DIR / f"{n}.yaml").is_file()]
        for name in dict.fromkeys(ev.models):
            if name not in unknown:
                p += learner_problems(name, self.learner(name), self.max_len)
        if unknown or not ev.models:
            known = sorted(path.stem for path in MODEL_CONF_DIR.glob("*.yaml"))
            what = f"unknown {', '.join(map(repr, unknown))}" if unknown else "empty"
            p.append(f"evaluation.models={list(ev.models)}: {what} (known: {', '.join(known)})")
        if not ev.seeds:
            p.append("evaluation.seeds is empty")
        if ev.protocol == "paper" and not unknown and self.method != "full":
            width = item_table_width(self.model.as_dict())
            other = [f"{n} ({item_table_width(self.learner(n))})" for n in ev.models
                     if item_table_width(self.learner(n)) != width]
            if other:
                p.append(f"evaluation.protocol=paper starts each learner from the teacher's item table "
                         f"(width {width}), which {', '.join(other)} cannot take: evaluate other "
                         f"architectures with evaluation.protocol=scratch")
        if self.method == "full":
            from .evaluate import protocol_problems
            p += protocol_problems(self.eval.protocols)
        else:  # Full-Data trains with train/, not with these
            p += settings_problems(ev.epochs, ev.batch_size, ev.lr, ev.weight_decay, ev.select, ev.eval_every,
                                   self.eval.protocols, prefix="evaluation.")
        return p

    def _bilevel_problems(self) -> list[str]:
        s, d, p = self.summary, self.distill, []
        if not 1 <= d.window <= d.steps:  # W = 0 differentiates no inner step: no meta-gradient at all
            p.append(f"distill.window W={d.window} must be in [1, distill.steps N={d.steps}]")
        inner = d.inner
        if inner.alt and not 1 <= inner.alt_low < s.zeta - 1:
            p.append(f"ALT needs 1 <= distill.inner.alt_low ({inner.alt_low}) < zeta - 1 ({s.zeta - 1})")
        if inner.order == "fixed" and s.mu % inner.batch_size:
            p.append(f"distill.inner.order=fixed needs summary.mu ({s.mu}) divisible by "
                     f"distill.inner.batch_size ({inner.batch_size})")
        if inner.batch_size > s.mu:
            p.append(f"distill.inner.batch_size={inner.batch_size} exceeds summary.mu={s.mu}")
        if d.init not in ("per_step", "per_epoch"):
            p.append(f"distill.init={d.init!r}: expected per_step or per_epoch")
        if d.init_from not in ("pool", "scratch"):
            p.append(f"distill.init_from={d.init_from!r}: expected pool or scratch")
        if d.outer.epochs < 1 or d.outer.batch_size < 1:
            p.append("distill.outer.epochs and distill.outer.batch_size must be >= 1")
        o = d.outer
        if not o.lr > 0:
            p.append(f"distill.outer.lr={o.lr} must be > 0")
        if not o.weight_decay >= 0:
            p.append(f"distill.outer.weight_decay={o.weight_decay} must be >= 0")
        if not o.clip > 0:
            p.append(f"distill.outer.clip={o.clip} must be > 0 (the meta-gradient's largest norm)")
        if not (o.ce_weight >= 0 and o.fsa_weight >= 0):
            p.append(f"distill.outer.ce_weight={o.ce_weight} and fsa_weight={o.fsa_weight} must be >= 0")
        if d.validate_protocol not in ("scratch", "paper"):
            p.append(f"distill.validate_protocol={d.validate_protocol!r}: expected scratch or paper")
        if d.validate_learners not in ("model", "all"):
            p.append(f"distill.validate_learners={d.validate_learners!r}: expected model or all")
        if not 0.0 <= d.average_last < 1.0:
            p.append(f"distill.average_last={d.average_last}: must be in [0, 1) (the last fraction of the outer "
                     f"loop whose validated summaries are averaged; 0: keep the best validated one)")
        if d.outer.min_steps < 0:
            p.append(f"distill.outer.min_steps={d.outer.min_steps}: must be >= 0 (0: the epochs alone decide)")
        for key in ("validate_every", "checkpoint_every"):
            if getattr(d, key) < 1:
                p.append(f"distill.{key}={getattr(d, key)} must be >= 1")
        p += settings_problems(d.validate_epochs, d.validate_batch_size, d.validate_lr, d.validate_weight_decay,
                               prefix="distill.validate_")
        learners = list(d.learners)
        if learners:
            unknown = [n for n in learners if n != self.model.name and not (MODEL_CONF_DIR / f"{n}.yaml").is_file()]
            if unknown:
                known = sorted(path.stem for path in MODEL_CONF_DIR.glob("*.yaml"))
                p.append(f"distill.learners={learners}: unknown {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(known)})")
            if self.model.name not in learners:
                p.append(f"distill.learners={learners} must include the run's model {self.model.name!r}: its "
                         f"teacher's item table is the summary's V")
            if len(set(learners)) != len(learners):
                p.append(f"distill.learners={learners} names a learner twice")
            for name in dict.fromkeys(learners):
                if name not in unknown:
                    p += learner_problems(name, self.learner(name), self.max_len)
        sampled = d.sampled_items
        if isinstance(sampled, bool) or not isinstance(sampled, int) or sampled < 0:
            p.append(f"distill.sampled_items={sampled!r} must be an integer >= 0 (0: every item)")
        elif sampled:
            from .models import MODELS
            for name in self.inner_learners:
                if not getattr(MODELS.get(name), "causal", True):
                    p.append(f"distill.sampled_items={sampled} needs a causal learner: {name} "
                             f"is trained on the summary by a cloze loss over every item")
        if self.max_len != s.zeta:
            p.append(f"max_len={self.max_len} must equal summary.zeta={s.zeta} (the learner reads ζ-1 items)")
        return p + inner.problems()


# ------------------------------------------------- training a learner
#: How a learner trained on a summary keeps its state: the best validation epoch, or the last.
SELECTIONS = ("best_valid", "last")


def settings_problems(epochs, batch_size, lr, weight_decay, select="best_valid", eval_every=1,
                      eval_protocols=("recbole100",), prefix: str = "") -> list[str]:
    """What is wrong with a learner's training settings, each named ``<prefix><setting>``
    (``prefix="evaluation."`` names the config keys, so a run can refuse them up front)."""
    from .evaluate import protocol_problems  # the protocols' definitions

    problems = []
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        problems.append(f"{prefix}epochs={epochs!r} must be an integer >= 1")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        problems.append(f"{prefix}batch_size={batch_size!r} must be an integer >= 1")
    if not lr > 0:
        problems.append(f"{prefix}lr={lr!r} must be > 0")
    if not weight_decay >= 0:
        problems.append(f"{prefix}weight_decay={weight_decay!r} must be >= 0")
    if select not in SELECTIONS:
        problems.append(f"{prefix}select={select!r} must be one of {', '.join(SELECTIONS)}")
    if isinstance(eval_every, bool) or not isinstance(eval_every, numbers.Integral) or eval_every < 1:
        problems.append(f"{prefix}eval_every={eval_every!r} must be an integer >= 1")
    problems += protocol_problems(eval_protocols, "eval.protocols" if prefix else "eval_protocols")
    return problems



# ---------------------------------------------------------------- learners
def seed_problems(key: str, seed) -> list[str]:
    """A seed is a non-negative integer (numpy's SeedSequence, from which runs derive theirs,
    takes no other)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        return [f"{key}={seed!r} must be an integer >= 0"]
    return []


def learner_problems(name: str, options: Named | Mapping[str, Any], max_len: int) -> list[str]:
    """What keeps learner ``name`` with ``options`` (a config's ``model`` or conf/model/<name>.yaml)
    from being built: ``td3.models.model_problems`` before any data is read."""
    from .models import model_problems
    return model_problems(name, max_len=max_len, **model_options(options))


def learner_options(name: str) -> dict:
    """conf/model/<name>.yaml: a learner's options when it is not the distillation's own."""
    path = MODEL_CONF_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"evaluation model {name!r}: no config at {path}")
    from omegaconf import OmegaConf
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def item_table_width(options: Mapping[str, Any]) -> int | None:
    """The width of a learner's item table: its embedding size, or its hidden size."""
    return options.get("embedding_size") or options.get("hidden_size")
