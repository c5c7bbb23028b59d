"""Using a summary: train a fresh learner on it, evaluate on the real data
(docs/method.md, "Using a summary").

The question a summary answers is "how good is a model trained only on this?", so the
learner starts from scratch (every weight freshly drawn from ``seed``), trains on S with
the same inner loss the distillation optimised for (``td3.losses.summary_loss``:
last-position KL plus ALT; BERT4Rec its soft cloze loss, or the same prefix targets), for a fixed budget of
epochs, and is evaluated on the real validation and test users.

``protocol="paper"`` reproduces the TD3 authors' evaluation instead: the learner's item
table starts from the teacher's, i.e. the learner already holds what the teacher learned
from the full data (docs/method.md, "Where td3 departs from the authors' code", counts
this among the defects of their evaluation; it is kept as an option so their numbers can
be compared with ours). Their "freeze" of that table was a
no-op, so the table is trainable unless ``freeze_item_embedding=True``.

``train_on_sequences`` does the same for real hard sequences (the Random and Longest
baselines at the same μ·ζ budget): next-item cross-entropy over training windows, through
the full-data loop's ``td3.train.train_epoch``.

Model selection (``select``): "best_valid" keeps the state with the best validation
recbole100 MRR@10 among the evaluated epochs (ties: the earlier one), "last" the final state. Both
then evaluate the kept state on valid and test.

Same seed, same inputs -> bitwise identical results: the learner's initialisation and
dropout come from the global RNG seeded here, the batch order and ALT's positions from
their own generators seeded from the same seed. Both entry points restore the caller's
global RNG states when they return: the distillation loop validates its summary with
``train_on_summary`` between outer steps, and reseeding its random stream there would
replay the same draws after every validation.
"""
from __future__ import annotations

import functools
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from td3.data import training_windows
from td3 import stop
from td3.config import settings_problems
from td3.errors import ConfigError
from td3.evaluate import PROTOCOLS as RANKINGS, EvalResult, evaluate
from td3.losses import summary_loss
from td3.models import build_model
from td3.models.base import SequentialRecommender
from td3.optim import Adam
from td3.device import resolve_device
from td3.seeds import rng_state, seed_everything, set_rng_state, training_seeds
from td3.train import epoch_mean, train_epoch

__all__ = ["SummaryTrainingResult", "train_on_summary", "train_on_sequences", "build_learner",
           "PROTOCOLS", "SELECT_PROTOCOL", "SELECT_METRIC"]

PROTOCOLS = ("scratch", "paper")
#: Model selection score: validation MRR@10 under the paper's ranking protocol.
SELECT_PROTOCOL, SELECT_METRIC = "recbole100", "MRR@10"


@dataclass
class SummaryTrainingResult:
    """The chosen state's metrics on both splits, and how training went.

    best_epoch: the epoch whose state was evaluated (``epochs`` under select="last").
    history: one dict per epoch: epoch, loss, seconds, and ``valid_MRR@10`` when validated.
    model: the trained learner in the chosen state (not part of the repr).
    """

    valid: EvalResult
    test: EvalResult
    best_epoch: int
    epochs: int
    seconds: float
    history: list[dict]
    model: SequentialRecommender | None = field(default=None, repr=False, compare=False)

    def validation_curve(self) -> list[list]:
        """[[epoch, validation MRR@10], ...] over the validated epochs, for the record."""
        key = f"valid_{SELECT_METRIC}"
        return [[e["epoch"], e[key]] for e in self.history if key in e]


# ------------------------------------------------------------------ learner
def build_learner(model_name: str, num_items: int, model_options: dict, *, max_len: int, seed: int,
                  protocol: str = "scratch", teacher_item_embedding: torch.Tensor | None = None,
                  freeze_item_embedding: bool = False, device=None) -> SequentialRecommender:
    """A learner seeded from ``seed``, fresh ("scratch") or with the teacher's item table ("paper").

    Seeds the global RNGs (initialisation and, later, dropout draw from them).
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown evaluation protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if freeze_item_embedding and protocol != "paper":
        raise ConfigError("freeze_item_embedding=True only applies with protocol='paper' "
                          "(freezing a randomly initialised table would cripple the learner)")
    options = dict(model_options or {})
    if options.get("max_len", max_len) != max_len:
        raise ConfigError(f"model_options max_len={options['max_len']} differs from max_len={max_len}")
    options["max_len"] = max_len
    seed_everything(seed)
    model = build_model(model_name, num_items, **options)
    if protocol == "paper":
        _copy_teacher_table(model, teacher_item_embedding)
        if freeze_item_embedding:
            model.item_embedding.weight.requires_grad_(False)
    return model.to(resolve_device(device))


def _copy_teacher_table(model: SequentialRecommender, teacher: torch.Tensor | None) -> None:
    table = model.item_embedding.weight  # (|V|+1, d)
    if teacher is None:
        raise ConfigError("protocol='paper' needs teacher_item_embedding, the teacher's "
                          "(num_items + 1, d) item table with its padding row")
    teacher = torch.as_tensor(teacher).detach()
    if tuple(teacher.shape) != tuple(table.shape):
        raise ConfigError(f"teacher_item_embedding has shape {tuple(teacher.shape)} but the learner's "
                          f"item table is {tuple(table.shape)} (num_items + 1 rows, padding included, "
                          f"× the learner's embedding size)")
    with torch.no_grad():
        table.copy_(teacher.to(table.dtype))
        table[0].zero_()  # padding embeds to nothing, whatever the teacher held there


# ------------------------------------------------------------------ checks
def _check_common(*settings) -> None:
    problems = settings_problems(*settings)
    if problems:
        raise ConfigError("; ".join(problems))


def _check_summary(S: torch.Tensor, num_items: int, alt: bool, alt_low: int) -> None:
    if not isinstance(S, torch.Tensor) or S.dim() != 3:
        raise ConfigError(f"S must be a (mu, zeta, num_items) tensor, got "
                          f"{tuple(S.shape) if isinstance(S, torch.Tensor) else type(S).__name__}")
    mu, zeta, items = S.shape
    if items != num_items:
        raise ConfigError(f"S has {items} item columns; the dataset has {num_items} items "
                          f"(S covers the real items only, no padding column)")
    if mu < 1 or zeta < 3:
        raise ConfigError(f"S has shape {tuple(S.shape)}: need mu >= 1 and zeta >= 3")
    if alt and not 1 <= alt_low < zeta - 1:
        raise ConfigError(f"alt_low={alt_low} must lie in [1, zeta - 1 = {zeta - 1}) for ALT "
                          f"(the extra target position is drawn from [alt_low, zeta - 1))")


def _check_length(model: SequentialRecommender, zeta: int) -> None:
    """Refuse a summary longer than a positional learner can read."""
    reads = zeta - 1 if model.causal else zeta  # BERT4Rec: all ζ (cloze), or ζ-1 and a [MASK] after them (prefix)
    if hasattr(model, "position_embedding") and reads > model.max_len:
        raise ConfigError(f"the learner reads {reads} positions of the summary (zeta={zeta}) "
                          f"but its max_len is {model.max_len}; raise max_len to at least {reads}")


@contextmanager
def _caller_rng_kept():
    """Run a block with the global RNGs (python, numpy, torch, CUDA) restored afterwards."""
    saved = rng_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            set_rng_state(saved)


def _keeps_caller_rng(function):
    """Decorator: the caller's global random streams are the same before and after."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with _caller_rng_kept():
            return function(*args, **kwargs)
    return wrapper


# ------------------------------------------------------------------ shared loop
def _fit(model, data, run_epoch: Callable[[int], float], *, epochs: int, select: str, eval_every: int,
         max_len: int, eval_protocols: Sequence[str], exclude_history: bool, device, progress: bool,
         desc: str, stoppable: bool = True) -> SummaryTrainingResult:
    """Run ``epochs`` epochs, keep the selected state, evaluate it on valid and test."""
    start = time.perf_counter()
    history: list[dict] = []
    best_score, best_epoch, best_state = -np.inf, epochs, None
    with tqdm(total=epochs, desc=desc, disable=not progress, dynamic_ncols=True, unit="ep") as bar:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            loss = run_epoch(epoch)
            entry = {"epoch": epoch, "loss": loss}
            if select == "best_valid" and (epoch % eval_every == 0 or epoch == epochs):
                result = evaluate(model, data, "valid", protocols=(SELECT_PROTOCOL,),
                                  max_len=max_len, device=device)
                score = result.metrics[SELECT_PROTOCOL][SELECT_METRIC]
                entry[f"valid_{SELECT_METRIC}"] = score
                if score > best_score:  # strict: ties keep the earlier state
                    best_score, best_epoch = score, epoch
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            entry["seconds"] = round(time.perf_counter() - t0, 3)
            history.append(entry)
            if stoppable:
                stop.check(f"while training a learner on the summary (epoch {epoch}; it starts over)")
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
    if best_state is not None:
        model.load_state_dict(best_state)
    valid, test = (evaluate(model, data, split, protocols=tuple(eval_protocols), max_len=max_len,
                            device=device, exclude_history=exclude_history)
                   for split in ("valid", "test"))
    return SummaryTrainingResult(valid=valid, test=test, best_epoch=best_epoch, epochs=epochs,
                                 seconds=round(time.perf_counter() - start, 3), history=history,
                                 model=model)


def _optimizer(model, lr: float, weight_decay: float) -> Adam:
    return Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)


# ------------------------------------------------------------------ entry points
@_keeps_caller_rng
def train_on_summary(S: torch.Tensor, data, model_name: str, model_options: dict, *,
                     epochs: int, batch_size: int, lr: float, weight_decay: float, alt: bool,
                     alt_low: int, seed: int, max_len: int, protocol: str = "scratch",
                     alt_weight: float = 1.0, bidirectional_loss: str = "cloze",
                     teacher_item_embedding: torch.Tensor | None = None,
                     freeze_item_embedding: bool = False, select: str = "best_valid",
                     eval_protocols: Sequence[str] = RANKINGS, eval_every: int = 1,
                     exclude_history: bool = False, device=None,
                     progress: bool = False, stoppable: bool = True) -> SummaryTrainingResult:
    """Train a fresh learner on the summary S (μ, ζ, |V|) and evaluate it on the real data.

    ``bidirectional_loss``: a bidirectional learner's loss, "cloze" or "prefix" (``td3.losses``).
    ``stoppable``: a stop request (``td3.stop``) ends the training at its next epoch;
    a caller with a better place to stop (the distillation's validation) says False.

    Each epoch is one pass over the μ rows of S in a seeded random order, in batches of
    ``batch_size`` rows, with ``summary_loss``. S is treated as data: detached, float32.
    A non-finite loss raises ``TrainingError`` naming the epoch and step (when that epoch ends).
    ``exclude_history`` applies to the final "full" ranking, as ``eval.exclude_history``
    does in full-data training. Seeds the global RNGs (as ``td3.train`` does).
    """
    _check_common(epochs, batch_size, lr, weight_decay, select, eval_every, eval_protocols)
    _check_summary(S, data.num_items, alt, alt_low)
    device = resolve_device(device)
    model = build_learner(model_name, data.num_items, model_options, max_len=max_len, seed=seed,
                          protocol=protocol, teacher_item_embedding=teacher_item_embedding,
                          freeze_item_embedding=freeze_item_embedding, device=device)
    _check_length(model, S.shape[1])
    S = S.detach().to(device=device, dtype=torch.float32)  # (μ, ζ, |V|)
    optimizer = _optimizer(model, lr, weight_decay)
    order_seed, alt_seed = training_seeds(seed)
    shuffle = torch.Generator().manual_seed(order_seed)
    alt_positions = torch.Generator().manual_seed(alt_seed)

    def run_epoch(epoch: int) -> float:
        # as td3.train.train_epoch: the order on the CPU, the losses read once per epoch
        model.train()
        order = torch.randperm(S.shape[0], generator=shuffle).to(device, non_blocking=True)
        starts = range(0, len(order), batch_size)
        losses = []
        for begin in starts:
            rows = order[begin:begin + batch_size]
            loss = summary_loss(model, S[rows], alt, alt_low, alt_positions, alt_weight=alt_weight,
                                bidirectional_loss=bidirectional_loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        return epoch_mean(torch.stack(losses).tolist(), [min(batch_size, len(order) - b) for b in starts],
                          f"non-finite loss ({{loss}}) training {model_name} on the summary at epoch "
                          f"{epoch}, step {{step}}")

    return _fit(model, data, run_epoch, epochs=epochs, select=select, eval_every=eval_every,
                max_len=max_len, eval_protocols=eval_protocols, exclude_history=exclude_history,
                device=device, progress=progress, stoppable=stoppable,
                desc=f"summary->{model_name}")


@_keeps_caller_rng
def train_on_sequences(sequences: list[np.ndarray], data, model_name: str, model_options: dict, *,
                       epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int,
                       max_len: int, select: str = "best_valid",
                       eval_protocols: Sequence[str] = RANKINGS, eval_every: int = 1,
                       exclude_history: bool = False, stride: int | None = None, device=None,
                       progress: bool = False) -> SummaryTrainingResult:
    """Train a fresh learner on real sequences (next-item cross-entropy) and evaluate it.

    The sequences are cut into training windows (``td3.data.training_windows``, ``stride``
    as in full-data training) and each epoch is ``td3.train.train_epoch`` over them, in
    batches of ``batch_size`` windows.
    """
    _check_common(epochs, batch_size, lr, weight_decay, select, eval_every, eval_protocols)
    for index, sequence in enumerate(sequences):
        ids = np.asarray(sequence)
        if len(ids) and (ids.min() < 1 or ids.max() > data.num_items):
            raise ConfigError(f"sequence {index} holds ids outside 1..{data.num_items}")
    inputs, targets = training_windows(list(sequences), max_len, stride)
    if len(inputs) == 0:
        raise ConfigError("the sequences hold no next-item example (each needs >= 2 items)")
    device = resolve_device(device)
    model = build_learner(model_name, data.num_items, model_options, max_len=max_len, seed=seed,
                          device=device)
    inputs, targets = torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device)
    optimizer = _optimizer(model, lr, weight_decay)
    shuffle = torch.Generator().manual_seed(training_seeds(seed)[0])

    def run_epoch(epoch: int) -> float:
        return train_epoch(model, optimizer, inputs, targets, batch_size, shuffle, epoch)

    return _fit(model, data, run_epoch, epochs=epochs, select=select, eval_every=eval_every,
                max_len=max_len, eval_protocols=eval_protocols, exclude_history=exclude_history,
                device=device, progress=progress,
                desc=f"sequences->{model_name}")
