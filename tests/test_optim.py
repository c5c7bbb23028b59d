"""td3.optim against torch.optim: the same numbers to the bit, the same checkpoint layout.
(That runs never import torch's compiler is checked on real runs: tests/test_train.py and
tests/test_distill.py.)"""
from __future__ import annotations

import pytest
import torch

from td3.optim import Adam, CosineSchedule


def two_models(seed: int = 0):
    torch.manual_seed(seed)
    a = torch.nn.Sequential(torch.nn.Embedding(20, 8), torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 20))
    b = torch.nn.Sequential(torch.nn.Embedding(20, 8), torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 20))
    b.load_state_dict(a.state_dict())
    return a, b


def loss_of(model, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    x, y = torch.randint(20, (16,), generator=g), torch.randint(20, (16,), generator=g)
    return torch.nn.functional.cross_entropy(model(x), y)


def train(model, opt, steps: range, skip_last_layer_at=()):
    for step in steps:
        opt.zero_grad()
        loss_of(model, step).backward()
        if step in skip_last_layer_at:  # a parameter without a gradient this step: it does not step
            for p in model[3].parameters():
                p.grad = None
        opt.step()


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_is_torch_adam_to_the_bit(weight_decay):
    ours_model, torch_model = two_models()
    ours = Adam(ours_model.parameters(), lr=0.01, weight_decay=weight_decay)
    theirs = torch.optim.Adam(torch_model.parameters(), lr=0.01, weight_decay=weight_decay)
    train(ours_model, ours, range(30), skip_last_layer_at={3, 4})
    train(torch_model, theirs, range(30), skip_last_layer_at={3, 4})
    for (name, p), q in zip(ours_model.named_parameters(), torch_model.parameters()):
        assert torch.equal(p, q), name
    assert ours.steps == [30, 30, 30, 28, 28]  # embedding, linear (w, b), last linear (w, b)
    # the parameters moved: the comparison is not between two untouched models
    assert not torch.equal(ours_model[1].weight, two_models()[0][1].weight)


def test_state_dicts_cross_load_between_ours_and_torch():
    ours_model, torch_model = two_models()
    ours = Adam(ours_model.parameters(), lr=0.01, weight_decay=0.001)
    train(ours_model, ours, range(10))
    # ours -> torch: torch continues where ours stopped, exactly as ours does
    torch_model.load_state_dict(ours_model.state_dict())
    theirs = torch.optim.Adam(torch_model.parameters(), lr=0.5)
    theirs.load_state_dict(ours.state_dict())
    assert theirs.param_groups[0]["lr"] == 0.01 and theirs.param_groups[0]["weight_decay"] == 0.001
    train(ours_model, ours, range(10, 20))
    train(torch_model, theirs, range(10, 20))
    assert all(torch.equal(p, q) for p, q in zip(ours_model.parameters(), torch_model.parameters()))
    # torch -> ours
    again = Adam(ours_model.parameters(), lr=1.0)
    again.load_state_dict(theirs.state_dict())
    assert again.steps == [20] * 5 and again.lr == 0.01
    train(ours_model, again, range(20, 25))
    train(torch_model, theirs, range(20, 25))
    assert all(torch.equal(p, q) for p, q in zip(ours_model.parameters(), torch_model.parameters()))


def test_a_state_for_other_parameters_is_refused():
    model, _ = two_models()
    opt = Adam(model.parameters())
    other = Adam(list(model.parameters())[:2])
    with pytest.raises(ValueError, match="parameters"):
        other.load_state_dict(opt.state_dict())


def test_cosine_schedule_follows_torch_and_resumes():
    p = torch.nn.Parameter(torch.zeros(1))
    ours = Adam([p], lr=0.03)
    sched = CosineSchedule(ours, 40)
    ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.03)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=40)
    lrs = []
    for t in range(1, 41):
        sched.step()
        ref_opt.step()
        ref.step()
        lrs.append(ours.lr)
        assert ours.lr == pytest.approx(ref.get_last_lr()[0], rel=1e-9, abs=1e-15)
    assert lrs[19] == pytest.approx(0.015) and lrs[-1] == pytest.approx(0.0, abs=1e-18)
    # resumed from a checkpoint taken at t = 10 (its own or torch's), the same rates follow
    for saved in ({"t": 10, "total_steps": 40}, {"last_epoch": 10, "T_max": 40}):
        opt = Adam([p], lr=0.03)
        resumed = CosineSchedule(opt, 40)
        resumed.load_state_dict(saved)
        resumed.step()
        assert opt.lr == lrs[10]
