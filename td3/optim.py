"""Adam and the cosine schedule for the loops that are not differentiated through: full-data
training, training on a summary, and the outer loop over the summary's factors.

Why not ``torch.optim``: its first ``step()`` imports ``torch._dynamo`` (the compiler
stack: seconds of CPU per process), and every run, SLURM task and Ray trial is
a new process. ``Adam`` below performs
``torch.optim.Adam``'s single-tensor update (the one it runs on CPU) operation for
operation, so the numbers are the same to the bit (tests/test_optim.py), and its
``state_dict`` has ``torch.optim``'s layout, so checkpoints load either way.

The differentiable inner loop has its own optimiser (``td3.inner.FunctionalOptimizer``):
it follows ``higher``'s Adam formula (the step size folds in √(1−β2^t) before ε is
added), which the func/higher agreement tests need; this one follows ``torch.optim``'s,
which keeps the outer loop's numbers and checkpoints what they were. The ``higher``
backend still wraps ``torch.optim``, which is what ``higher`` needs.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch


class Adam:
    """Adam with L2 weight decay added to the gradient (``torch.optim.Adam``, not AdamW)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        self.params = [p for p in params]
        if not self.params:
            raise ValueError("Adam got an empty parameter list")
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), tuple(betas), float(eps), float(weight_decay)
        self.steps = [0] * len(self.params)  # per parameter, as torch.optim: one without a gradient does not step
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            self.steps[i] += 1
            t = self.steps[i]
            grad = p.grad
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            m, v = self.exp_avg[i], self.exp_avg_sq[i]
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = self.lr / (1 - beta1 ** t)
            denom = (v.sqrt() / (1 - beta2 ** t) ** 0.5).add_(self.eps)
            p.addcdiv_(m, denom, value=-step_size)

    # torch.optim's layout: {"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}
    def state_dict(self) -> dict:
        state = {i: {"step": torch.tensor(float(self.steps[i])), "exp_avg": self.exp_avg[i].clone(),
                     "exp_avg_sq": self.exp_avg_sq[i].clone()}
                 for i in range(len(self.params)) if self.steps[i]}
        group = {"lr": self.lr, "betas": self.betas, "eps": self.eps,
                 "weight_decay": self.weight_decay, "amsgrad": False, "maximize": False,
                 "params": list(range(len(self.params)))}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, saved: dict) -> None:
        groups = saved["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError(f"optimizer state for {sum(len(g['params']) for g in groups)} parameters, "
                             f"this optimizer has {len(self.params)}")
        group = groups[0]
        self.lr = float(group["lr"])
        self.betas, self.eps, self.weight_decay = tuple(group["betas"]), float(group["eps"]), float(group["weight_decay"])
        self.steps = [0] * len(self.params)
        for key, entry in saved["state"].items():
            i = group["params"].index(key)
            p = self.params[i]
            if entry["exp_avg"].shape != p.shape:
                raise ValueError(f"optimizer state of shape {tuple(entry['exp_avg'].shape)} for a parameter "
                                 f"of shape {tuple(p.shape)}")
            self.exp_avg[i] = entry["exp_avg"].to(p.device, p.dtype).clone()
            self.exp_avg_sq[i] = entry["exp_avg_sq"].to(p.device, p.dtype).clone()
            self.steps[i] = int(entry["step"])


class CosineSchedule:
    """lr_t = lr_0 · (1 + cos(π t / T)) / 2 after t of T steps, set on the optimiser at each
    ``step()`` (torch's CosineAnnealingLR with eta_min = 0, in closed form rather than its
    recursive update, which accumulates rounding)."""

    def __init__(self, optimizer: Adam, total_steps: int):
        self.optimizer, self.base_lr = optimizer, optimizer.lr
        self.total_steps, self.t = max(1, int(total_steps)), 0

    def step(self) -> None:
        self.t += 1
        self.optimizer.lr = self.base_lr * (1 + math.cos(math.pi * self.t / self.total_steps)) / 2

    def state_dict(self) -> dict:
        return {"t": self.t, "total_steps": self.total_steps}

    def load_state_dict(self, saved: dict) -> None:
        self.t = int(saved["t"] if "t" in saved else saved["last_epoch"])  # or torch's CosineAnnealingLR
