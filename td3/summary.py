"""The synthetic summary S: μ sequences of ζ item distributions, three parameterisations.

S has shape (μ, ζ, |V|): row a, position b is a distribution over the real items 1..|V|.
It is never stored as such; each parameterisation produces its logits, and S is their
softmax over the item axis. Logits have no padding column, so padding gets no mass by
construction (the reference code's defect of putting mass on padding, docs/method.md,
"Where td3 departs from the authors' code", cannot happen here). The learners read S
directly (``P @ E``, ``td3.models.base``).

- ``TuckerSummary`` (TD3, docs/method.md, "The summary"):
  logits[a,b,c] = Σ_ijk G[i,j,k]·U[a,i]·T[b,j]·V[c,k]
  with U (μ×d1), T (ζ×d2), core G (d1×d2×d3) learnable and V (|V|×d3) the teacher's item
  table, frozen. Storage grows with μ+ζ, not μ·ζ·|V|.
- ``FarziSummary`` (Farzi, Sachdeva et al.): a latent summary D (μ×ζ×d) decoded by
  M (d×|V|): logits = D·M.
- ``NaiveSummary``: free logits (μ×ζ×|V|), the unfactorised reference point.

All three share one interface (``Summary``) so the distillation loop, the evaluation on
a summary and the export never ask which one they hold. ``rows`` selects sequences: a
caller that needs only some of them (``hard_sequences``, a chunk of rows at a time) never
holds the whole (μ, ζ, |V|) tensor.

Initialisation is deterministic given a ``torch.Generator`` (else the global RNG).
Farzi's D and M use N(0, 0.02) like U and T: the Farzi paper's text was not at hand to
check a different scheme, and the same scale for every parameterisation keeps the
comparison about structure, not about starting points (both start from an almost
uniform S).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from td3 import records
from td3.data.formats import write_inter
from td3.errors import ConfigError, DamagedFileError, TrainingError

__all__ = ["Summary", "TuckerSummary", "FarziSummary", "NaiveSummary", "build_summary", "KINDS"]

#: Standard deviation of the N(0, σ) initialisation of U, T, D, M and free logits
#: (docs/method.md, "The summary").
INIT_STD = 0.02
FILE_FORMAT = "td3-summary"
#: 2: shared tensors (Tucker's V) are referenced by shape and sha256, not stored; 1 stored them.
FILE_VERSION = 2
READABLE_VERSIONS = (1, 2)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"summary: {name} must be a positive integer, got {value!r}")
    return int(value)


class Summary(nn.Module):
    """Base class: sizes, distributions, storage accounting, save/load and export."""

    kind: str = ""

    def __init__(self, mu: int, zeta: int, num_items: int):
        super().__init__()
        self.mu = _positive_int("mu", mu)
        self.zeta = _positive_int("zeta", zeta)
        self.num_items = _positive_int("num_items", num_items)
        self.meta: dict = {}  # free-form provenance, saved with the file
        if self.zeta < 3:
            # The inner loss predicts position ζ-1 from ζ-1 inputs, and ALT needs a
            # second target position before it.
            raise ConfigError(f"summary: zeta={zeta} must be >= 3 (the inner loss needs at least "
                              f"two input positions before the last one)")

    # ------------------------------------------------------------ the tensor
    def logits(self, rows: torch.Tensor | None = None, items: torch.Tensor | None = None) -> torch.Tensor:
        """(m, ζ, |V|) logits over the real items of the sequences ``rows`` (default: all μ);
        with ``items`` (k,) 0-based item columns, only those: (m, ζ, k)."""
        raise NotImplementedError

    def distributions(self, rows: torch.Tensor | None = None, items: torch.Tensor | None = None,
                      log_weight: torch.Tensor | None = None) -> torch.Tensor:
        """S[rows]: (m, ζ, |V|), each position a distribution over the real items.

        items/log_weight: a sampled subset of the items (``td3.candidates``): S restricted to
        them, each column's logit raised by the log of how many items it stands for, so that
        the softmax over the subset estimates the one over all items: (m, ζ, k).
        """
        logits = self.logits(rows, items)
        if log_weight is not None:
            logits = logits + log_weight
        return logits.softmax(dim=-1)

    @torch.no_grad()
    def hard_sequences(self) -> torch.Tensor:
        """(μ, ζ) LongTensor: the most probable item per position, ids 1..|V|.

        Computed a chunk of rows at a time so that the full (μ, ζ, |V|) tensor is never
        held at once.
        """
        parts = [self.logits(rows).argmax(dim=-1) + 1 for rows in self._row_chunks()]  # column c is item c+1
        return torch.cat(parts).cpu()

    @torch.no_grad()
    def statistics(self, mass: float = 0.9) -> dict:
        """How peaked S is, to tell a summary that learned from one still near its almost
        uniform start (docs/method.md, "Reading a summary"):

        entropy: mean entropy of a position's distribution, in nats; relative_entropy: that
        over ln |V| (1: uniform); top1: mean probability of a position's most probable item;
        argmax_items: distinct items among the hard sequences; mass_items: the fewest items
        holding ``mass`` of S's total probability. A chunk of rows at a time.
        """
        entropy = top1 = 0.0
        totals = torch.zeros(self.num_items, dtype=torch.float64)
        argmax = []
        for rows in self._row_chunks():
            logp = self.logits(rows).double().log_softmax(dim=-1)  # (m, ζ, |V|)
            p = logp.exp()
            entropy += float(-(p * logp).sum(-1).sum())
            top1 += float(p.max(-1).values.sum())
            totals += p.sum((0, 1)).cpu()
            argmax.append(p.argmax(-1).flatten().cpu())
        positions = self.mu * self.zeta
        cumulative = (totals / totals.sum()).sort(descending=True).values.cumsum(0)
        mass_items = int(torch.searchsorted(cumulative, torch.tensor([mass], dtype=torch.float64))) + 1
        return {"entropy": entropy / positions,
                "relative_entropy": entropy / positions / math.log(self.num_items) if self.num_items > 1 else 0.0,
                "top1": top1 / positions, "argmax_items": int(torch.cat(argmax).unique().numel()),
                f"items_{round(mass * 100)}pct_mass": min(mass_items, self.num_items)}

    # ------------------------------------------------------------- accounting
    def num_parameters(self) -> int:
        """Learnable numbers only (Tucker's V is a frozen buffer, not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def shared_numbers(self) -> int:
        """Numbers referenced from elsewhere (the teacher's item table), not stored with S."""
        return sum(t.numel() for t in self.shared_tensors().values())

    def shared_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors S is computed from but does not own (Tucker's V: the teacher's item table)."""
        return {}

    def storage(self) -> dict:
        """What must be stored to reproduce S: learnable numbers and their bytes, plus
        the numbers that are only referenced (Tucker's V, which the teacher ships anyway)."""
        numbers = self.num_parameters()
        bytes_ = sum(p.numel() * p.element_size() for p in self.parameters() if p.requires_grad)
        return {"numbers": numbers, "bytes": bytes_, "shared_numbers": self.shared_numbers()}

    # -------------------------------------------------------------- save/load
    def config(self) -> dict:
        """Constructor sizes (everything but tensors) for ``build_summary``."""
        return {"mu": self.mu, "zeta": self.zeta, "num_items": self.num_items}

    def save(self, path: str | Path, meta: dict | None = None, include_shared: bool = False) -> Path:
        """One ``.pt`` file (atomic): kind, sizes, the summary's own tensors and ``meta``
        (JSON-able; default ``self.meta``). JSON rather than pickled objects keeps
        ``weights_only`` loading.

        Shared tensors (Tucker's V, the teacher's item table) are referenced by shape and
        sha256 rather than stored, as the method counts them (docs/method.md, "The summary"):
        the file holds μ·d1 + ζ·d2 + d1·d2·d3 numbers, and loading it takes the teacher's V,
        checked against the reference. ``include_shared=True`` stores them too: a file that loads
        without the teacher."""
        shared = self.shared_tensors()
        payload = {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "kind": self.kind,
            "config": self.config(),
            "tensors": {k: v.detach().cpu() for k, v in self.state_dict().items()
                        if include_shared or k not in shared},
            "shared": {k: {"shape": list(v.shape), "sha256": tensor_sha256(v)} for k, v in shared.items()},
            "meta": json.dumps(self.meta if meta is None else meta, sort_keys=True, default=str),
        }
        return records.torch_save(payload, path)

    @classmethod
    def load(cls, path: str | Path, map_location=None, shared: dict | None = None) -> "Summary":
        """The summary saved at ``path``; an unreadable or foreign file is a DamagedFileError.

        ``shared``: the tensors the file references but does not hold ({"V": the teacher's
        item table without its padding row} for a Tucker summary); each must match the
        file's reference (shape and sha256)."""
        path = Path(path)
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DamagedFileError(f"summary file {path} cannot be read ({type(exc).__name__})") from exc
        if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
            raise DamagedFileError(f"{path} is not a td3 summary file")
        if payload.get("version") not in READABLE_VERSIONS:
            raise TrainingError(f"{path}: summary file version {payload.get('version')} "
                                f"is not supported (expected one of {READABLE_VERSIONS})")
        tensors = dict(payload["tensors"])
        for name, ref in (payload.get("shared") or {}).items():
            if name in tensors:
                continue
            given = (shared or {}).get(name)
            if given is None:
                raise TrainingError(f"{path} references the teacher's {name} (shape {ref['shape']}, sha256 "
                                    f"{ref['sha256'][:12]}…) without holding it: load it with shared={{{name!r}: ...}}")
            given = torch.as_tensor(given).detach().cpu()
            if list(given.shape) != ref["shape"] or tensor_sha256(given) != ref["sha256"]:
                raise TrainingError(f"{path}: the {name} given (shape {list(given.shape)}) is not the one the "
                                    f"summary was distilled with (shape {ref['shape']}, sha256 {ref['sha256'][:12]}…)")
            tensors[name] = given
        config = dict(payload["config"])
        kind = payload["kind"]
        item_factor = tensors.get("V") if kind == "tucker" else None
        dtype = next(iter(tensors.values())).dtype
        summary = build_summary(kind, item_factor=item_factor, dtype=dtype, **config)
        summary.load_state_dict(tensors)
        summary.meta = json.loads(payload.get("meta") or "{}")
        if not isinstance(summary, cls):
            raise TrainingError(f"{path} holds a {kind!r} summary, not a {cls.__name__}")
        return summary.to(map_location) if map_location is not None else summary

    def export_inter(self, path: str | Path, item_ids=None) -> Path:
        """The hard sequences as a RecBole atomic file (users s0..s{μ-1}), atomically.

        ``item_ids``: id -> raw item token (``SequenceDataset.item_ids``), so another
        library sees the dataset's own item tokens.
        """
        return write_inter(list(self.hard_sequences().numpy()), path, item_ids)

    # ---------------------------------------------------------------- helpers
    def _row_chunks(self, scores: int = 1 << 22):
        """Row indices of S, a chunk at a time, each chunk at most ``scores`` logits (at least
        one row): what reads all of S never holds the whole (μ, ζ, |V|) tensor."""
        chunk = max(1, scores // max(1, self.zeta * self.num_items))
        for start in range(0, self.mu, chunk):
            yield torch.arange(start, min(start + chunk, self.mu), device=self._device())

    def _device(self) -> torch.device:
        for tensor in self.state_dict().values():
            return tensor.device
        return torch.device("cpu")

    def _rows(self, rows: torch.Tensor | None, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if rows is None else tensor[rows]

    def extra_repr(self) -> str:
        return f"kind={self.kind}, mu={self.mu}, zeta={self.zeta}, num_items={self.num_items}"


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes (on the CPU, contiguous)."""
    t = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{t.dtype}:{tuple(t.shape)}:".encode())
    digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _normal(shape, dtype, generator) -> nn.Parameter:
    tensor = torch.empty(shape, dtype=dtype)
    nn.init.normal_(tensor, 0.0, INIT_STD, generator=generator)
    return nn.Parameter(tensor)


class TuckerSummary(Summary):
    """S = softmax_c(Σ_ijk G[i,j,k] U[a,i] T[b,j] V[c,k]); V frozen (docs/method.md, "The summary")."""

    kind = "tucker"

    def __init__(self, mu: int, zeta: int, num_items: int, item_factor: torch.Tensor,
                 d1: int = 8, d2: int = 8, *, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__(mu, zeta, num_items)
        self.d1, self.d2 = _positive_int("d1", d1), _positive_int("d2", d2)
        if self.d1 > self.mu:
            raise ConfigError(f"summary: d1={d1} > mu={mu}; a mode rank above the mode's size "
                              f"adds parameters but no expressiveness")
        if self.d2 > self.zeta:
            raise ConfigError(f"summary: d2={d2} > zeta={zeta}; a mode rank above the mode's "
                              f"size adds parameters but no expressiveness")
        if item_factor is None:
            raise ConfigError("summary 'tucker' needs item_factor: the teacher's item table "
                              "without its padding row, (num_items, d3)")
        item_factor = torch.as_tensor(item_factor)
        if item_factor.dim() != 2 or item_factor.shape[0] != self.num_items:
            hint = (" (it looks like it includes the padding row: pass item_embedding.weight[1:])"
                    if item_factor.dim() == 2 and item_factor.shape[0] == self.num_items + 1 else "")
            raise ConfigError(f"summary 'tucker': item_factor has shape {tuple(item_factor.shape)}; "
                              f"expected ({self.num_items}, d3), one row per real item{hint}")
        self.d3 = int(item_factor.shape[1])
        self.U = _normal((self.mu, self.d1), dtype, generator)      # (μ, d1)
        self.T = _normal((self.zeta, self.d2), dtype, generator)    # (ζ, d2)
        core = torch.empty(self.d1, self.d2, self.d3, dtype=dtype)
        nn.init.kaiming_normal_(core, generator=generator)          # fan_in = d2·d3
        self.G = nn.Parameter(core)                                 # (d1, d2, d3)
        # A buffer: moves with .to(), saved in state_dict, never in parameters().
        self.register_buffer("V", item_factor.detach().to(dtype).clone())  # (|V|, d3)

    def sequence_factors(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """W = G ×1 U[rows] ×2 T: (m, ζ, d3), the summary in the teacher's embedding space."""
        ug = torch.einsum("ai,ijk->ajk", self._rows(rows, self.U), self.G)  # (m, d2, d3)
        return torch.einsum("ajk,bj->abk", ug, self.T)                      # (m, ζ, d3)

    def logits(self, rows=None, items=None):
        # Contract the small factors first; the only |V|-sized tensor is the output.
        V = self.V if items is None else self.V[items]
        return self.sequence_factors(rows) @ V.T  # (m, ζ, |V|)

    def shared_tensors(self) -> dict[str, torch.Tensor]:
        return {"V": self.V}

    def config(self):
        return {**super().config(), "d1": self.d1, "d2": self.d2}


class FarziSummary(Summary):
    """S = softmax(D·M): latent summary D (μ×ζ×d), decoder M (d×|V|)."""

    kind = "farzi"

    def __init__(self, mu: int, zeta: int, num_items: int, latent_dim: int = 32, *,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32):
        super().__init__(mu, zeta, num_items)
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        self.D = _normal((self.mu, self.zeta, self.latent_dim), dtype, generator)  # (μ, ζ, d)
        self.M = _normal((self.latent_dim, self.num_items), dtype, generator)       # (d, |V|)

    def logits(self, rows=None, items=None):
        M = self.M if items is None else self.M[:, items]
        return self._rows(rows, self.D) @ M  # (m, ζ, |V|)

    def config(self):
        return {**super().config(), "latent_dim": self.latent_dim}


class NaiveSummary(Summary):
    """S = softmax of a free (μ, ζ, |V|) tensor."""

    kind = "naive"

    def __init__(self, mu: int, zeta: int, num_items: int, *,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32):
        super().__init__(mu, zeta, num_items)
        self.free_logits = _normal((self.mu, self.zeta, self.num_items), dtype, generator)  # (μ, ζ, |V|)

    def logits(self, rows=None, items=None):
        free = self._rows(rows, self.free_logits)
        return free if items is None else free[..., items]


KINDS: dict[str, type[Summary]] = {"tucker": TuckerSummary, "farzi": FarziSummary, "naive": NaiveSummary}


def build_summary(kind: str, mu: int, zeta: int, num_items: int, *,
                  item_factor: torch.Tensor | None = None, d1: int = 8, d2: int = 8,
                  latent_dim: int | None = None, generator: torch.Generator | None = None,
                  dtype: torch.dtype = torch.float32) -> Summary:
    """A freshly initialised summary of ``kind`` ("tucker" | "farzi" | "naive").

    latent_dim (Farzi's d) defaults to the width of ``item_factor`` when one is given
    (the teacher's hidden size, so Farzi and Tucker decode through spaces of the same
    width), else 32 (the SASRec hidden size of the reference scripts). d1/d2 only apply
    to Tucker, latent_dim only to Farzi.
    """
    key = str(kind).lower()
    if key not in KINDS:
        raise ConfigError(f"unknown summary kind {kind!r}; choose from {', '.join(KINDS)}")
    if key == "tucker":
        return TuckerSummary(mu, zeta, num_items, item_factor, d1, d2, generator=generator, dtype=dtype)
    if key == "farzi":
        if latent_dim is None:
            latent_dim = int(item_factor.shape[-1]) if item_factor is not None else 32
        return FarziSummary(mu, zeta, num_items, latent_dim, generator=generator, dtype=dtype)
    return NaiveSummary(mu, zeta, num_items, generator=generator, dtype=dtype)
