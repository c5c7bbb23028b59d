"""The three summary parameterisations: shapes, the Tucker formula, accounting, files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from td3.data.formats import read_interactions
from td3.errors import ConfigError, TrainingError
from td3.summary import FarziSummary, NaiveSummary, Summary, TuckerSummary, build_summary

MU, ZETA, ITEMS, D1, D2, D3, LATENT = 6, 5, 11, 3, 4, 7, 4


def make(kind: str, seed: int = 0, dtype=torch.float32) -> Summary:
    generator = torch.Generator().manual_seed(seed)
    item_factor = torch.randn(ITEMS, D3, generator=torch.Generator().manual_seed(99), dtype=dtype)
    return build_summary(kind, MU, ZETA, ITEMS, item_factor=item_factor, d1=D1, d2=D2,
                         latent_dim=LATENT, generator=generator, dtype=dtype)


KINDS = ("tucker", "farzi", "naive")


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_rows_and_distributions(kind):
    summary = make(kind)
    assert summary.kind == kind and (summary.mu, summary.zeta, summary.num_items) == (MU, ZETA, ITEMS)
    full = summary.distributions()
    assert full.shape == (MU, ZETA, ITEMS)  # real items only: no padding column
    rows = torch.tensor([4, 0, 2])
    assert summary.logits(rows).shape == (3, ZETA, ITEMS)
    torch.testing.assert_close(summary.distributions(rows), full[rows], rtol=0, atol=1e-7)
    assert (full >= 0).all()
    torch.testing.assert_close(full.sum(-1), torch.ones(MU, ZETA), rtol=0, atol=1e-6)


def test_tucker_logits_equal_the_four_factor_contraction():
    summary = make("tucker", dtype=torch.float64)
    explicit = torch.einsum("ijk,ai,bj,ck->abc", summary.G, summary.U, summary.T, summary.V)
    torch.testing.assert_close(summary.logits(), explicit, rtol=0, atol=1e-10)
    # element by element, the formula of docs/method.md, "The summary", for one entry
    a, b, c = 3, 1, 9
    entry = sum(summary.G[i, j, k] * summary.U[a, i] * summary.T[b, j] * summary.V[c, k]
                for i in range(D1) for j in range(D2) for k in range(D3))
    assert abs(summary.logits()[a, b, c].item() - entry.item()) < 1e-10


def test_tucker_item_factor_is_frozen_and_a_buffer():
    summary = make("tucker")
    names = {name for name, _ in summary.named_parameters()}
    assert names == {"U", "T", "G"}
    assert not summary.V.requires_grad and "V" in summary.state_dict()
    summary.distributions(torch.tensor([1])).pow(2).sum().backward()
    assert summary.V.grad is None
    assert all(p.grad is not None for p in summary.parameters())
    # only the selected row of U receives gradient
    assert summary.U.grad[1].abs().sum() > 0 and summary.U.grad[[0, 2, 3, 4, 5]].abs().sum() == 0


def test_parameter_counts_and_storage_by_formula():
    tucker, farzi, naive = (make(k) for k in KINDS)
    assert tucker.num_parameters() == MU * D1 + ZETA * D2 + D1 * D2 * D3 == 122
    assert farzi.num_parameters() == MU * ZETA * LATENT + LATENT * ITEMS == 164
    assert naive.num_parameters() == MU * ZETA * ITEMS == 330
    assert tucker.storage() == {"numbers": 122, "bytes": 4 * 122, "shared_numbers": ITEMS * D3}
    assert farzi.storage() == {"numbers": 164, "bytes": 4 * 164, "shared_numbers": 0}
    assert naive.storage() == {"numbers": 330, "bytes": 4 * 330, "shared_numbers": 0}
    # Farzi's latent width defaults to the teacher table's width (d3)
    wide = build_summary("farzi", MU, ZETA, ITEMS, item_factor=torch.zeros(ITEMS, 9))
    assert wide.latent_dim == 9


@pytest.mark.parametrize("kind", KINDS)
def test_initialisation_is_deterministic_given_a_generator(kind):
    first, again, other = make(kind, seed=1), make(kind, seed=1), make(kind, seed=2)
    for (name, p), q, r in zip(first.named_parameters(), again.parameters(), other.parameters()):
        assert torch.equal(p, q), name
        assert not torch.equal(p, r), name


def test_initial_scales():
    item_factor = torch.zeros(50, 64)
    summary = build_summary("tucker", 400, 60, 50, item_factor=item_factor, d1=16, d2=16,
                            generator=torch.Generator().manual_seed(0))
    assert abs(summary.U.std().item() - 0.02) < 0.002 and abs(summary.T.std().item() - 0.02) < 0.002
    kaiming = (2.0 / (16 * 64)) ** 0.5  # gain √2, fan_in = d2·d3
    assert abs(summary.G.std().item() / kaiming - 1) < 0.05


def test_hard_sequences_are_the_most_probable_ids():
    summary = make("naive")
    wanted = torch.randint(1, ITEMS + 1, (MU, ZETA), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        summary.free_logits.scatter_(2, (wanted - 1).unsqueeze(-1), 10.0)
    hard = summary.hard_sequences()
    assert hard.dtype == torch.int64 and torch.equal(hard, wanted)
    for kind in ("tucker", "farzi"):
        other = make(kind)
        assert torch.equal(other.hard_sequences(), other.distributions().argmax(-1) + 1)


def test_statistics_tell_a_uniform_summary_from_a_peaked_one():
    summary = make("naive")
    with torch.no_grad():
        summary.free_logits.zero_()
    flat = summary.statistics()
    assert flat["relative_entropy"] == pytest.approx(1.0)
    assert flat["entropy"] == pytest.approx(np.log(ITEMS))
    assert flat["top1"] == pytest.approx(1 / ITEMS)
    assert flat["items_90pct_mass"] == 10  # 0.9 of 11 equal masses needs 10 items
    # every position puts 1 - 1e-6 on its own item, three distinct items in all
    wanted = torch.tensor([1, 5, 9]).repeat(MU * ZETA)[: MU * ZETA].view(MU, ZETA)
    with torch.no_grad():
        summary.free_logits.fill_(-20.0).scatter_(2, (wanted - 1).unsqueeze(-1), 20.0)
    peaked = summary.statistics()
    assert peaked["relative_entropy"] < 1e-3 and peaked["top1"] > 0.999
    assert peaked["argmax_items"] == 3 and peaked["items_90pct_mass"] == 3
    assert summary.statistics(mass=0.3)["items_30pct_mass"] == 1


def test_reading_s_a_chunk_of_rows_at_a_time_equals_reading_it_whole(monkeypatch):
    """hard_sequences and statistics read S a few rows at a time: with chunks of one and of
    four rows (the last chunk short), the figures are those of the whole tensor at once."""
    summary = make("tucker")
    whole = (summary.hard_sequences(), summary.statistics())
    chunks = Summary._row_chunks
    for rows in (1, 4):
        monkeypatch.setattr(Summary, "_row_chunks", lambda self, n=rows: chunks(self, scores=n * ZETA * ITEMS))
        assert [len(r) for r in summary._row_chunks()] == [rows] * (MU // rows) + ([MU % rows] if MU % rows else [])
        assert torch.equal(summary.hard_sequences(), whole[0])
        stats = summary.statistics()
        assert stats.keys() == whole[1].keys()
        assert all(stats[k] == pytest.approx(whole[1][k], rel=1e-9) for k in stats)


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, tmp_path):
    summary = make(kind)
    summary.meta = {"dataset": "synthetic", "outer_epoch": 3}
    path = summary.save(tmp_path / "s.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]  # no temporary file left
    loaded = Summary.load(path, shared=summary.shared_tensors())
    assert type(loaded) is type(summary) and loaded.config() == summary.config()
    assert torch.equal(loaded.distributions(), summary.distributions())
    assert loaded.meta == {"dataset": "synthetic", "outer_epoch": 3}
    assert loaded.num_parameters() == summary.num_parameters()


def test_tucker_file_references_the_teachers_table(tmp_path):
    summary = make("tucker")
    path = summary.save(tmp_path / "t.pt")
    payload = torch.load(path, weights_only=True)
    assert set(payload["tensors"]) == {"U", "T", "G"} and payload["shared"]["V"]["shape"] == list(summary.V.shape)
    stored = sum(t.numel() for t in payload["tensors"].values())
    assert stored == summary.mu * D1 + summary.zeta * D2 + D1 * D2 * summary.d3 == summary.num_parameters()
    with pytest.raises(TrainingError, match="references the teacher's V"):
        Summary.load(path)
    with pytest.raises(TrainingError, match="not the one the summary was distilled with"):
        Summary.load(path, shared={"V": summary.V.flip(0)})
    assert torch.equal(Summary.load(path, shared={"V": summary.V}).distributions(), summary.distributions())
    # stored whole on request: loads without the teacher
    whole = summary.save(tmp_path / "whole.pt", include_shared=True)
    assert torch.equal(Summary.load(whole).distributions(), summary.distributions())


def test_load_refuses_bad_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="cannot be read"):
        Summary.load(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(TrainingError, match="not a td3 summary"):
        Summary.load(foreign)
    path = make("naive").save(tmp_path / "naive.pt")
    with pytest.raises(TrainingError, match="not a TuckerSummary"):
        TuckerSummary.load(path)


@pytest.mark.parametrize("with_tokens", [False, True])
def test_export_inter_parses_back_to_the_hard_sequences(tmp_path, with_tokens):
    summary = make("tucker")
    item_ids = np.array(["[PAD]"] + [f"item{c * 7}" for c in range(1, ITEMS + 1)], dtype=object)
    path = summary.export_inter(tmp_path / "summary.inter", item_ids=item_ids if with_tokens else None)
    assert path.read_text().splitlines()[0] == "user_id:token\titem_id:token\ttimestamp:float"
    table = read_interactions(path, "atomic")
    assert len(table) == MU * ZETA
    token_to_id = {str(t): i for i, t in enumerate(item_ids)} if with_tokens else None
    hard = summary.hard_sequences()
    for a in range(MU):
        rows = table[table["user"] == f"s{a}"].sort_values("timestamp")
        assert rows["timestamp"].tolist() == list(range(ZETA))
        ids = [token_to_id[t] if with_tokens else int(t) for t in rows["item"]]
        assert ids == hard[a].tolist()


def test_impossible_configs_raise_config_errors():
    factor = torch.zeros(ITEMS, D3)
    with pytest.raises(ConfigError, match="d1=7 > mu=6"):
        build_summary("tucker", MU, ZETA, ITEMS, item_factor=factor, d1=7)
    with pytest.raises(ConfigError, match="d2=6 > zeta=5"):
        build_summary("tucker", MU, ZETA, ITEMS, item_factor=factor, d1=2, d2=6)
    for kind in KINDS:
        with pytest.raises(ConfigError, match="zeta=2 must be >= 3"):
            build_summary(kind, MU, 2, ITEMS, item_factor=factor, d1=2, d2=2)
    with pytest.raises(ConfigError, match="needs item_factor"):
        build_summary("tucker", MU, ZETA, ITEMS, d1=2, d2=2)
    with pytest.raises(ConfigError, match="padding row"):
        build_summary("tucker", MU, ZETA, ITEMS, item_factor=torch.zeros(ITEMS + 1, D3), d1=2, d2=2)
    with pytest.raises(ConfigError, match=r"shape \(5, 7\)"):
        build_summary("tucker", MU, ZETA, ITEMS, item_factor=torch.zeros(5, D3), d1=2, d2=2)
    with pytest.raises(ConfigError, match="unknown summary kind"):
        build_summary("cp", MU, ZETA, ITEMS)
    with pytest.raises(ConfigError, match="mu must be a positive integer"):
        build_summary("naive", 0, ZETA, ITEMS)
    assert isinstance(build_summary("farzi", MU, ZETA, ITEMS, latent_dim=3), FarziSummary)
    assert isinstance(build_summary("naive", MU, ZETA, ITEMS), NaiveSummary)
