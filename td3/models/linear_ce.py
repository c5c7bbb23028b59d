"""Cross-entropy of ``h · tableᵀ`` without the (n, |V|) score matrix (docs/performance.md).

The next-item loss of a batch of n positions over |V| items is the costliest operation of
full-data training and of the distillation's outer loss (n = 32,768 on ML-1M: a 470 MB
score matrix, written, read by log-softmax, and read again by its backward). Here the
rows are processed in chunks small enough to stay in cache, and each chunk's gradient
(softmax − one-hot) is formed while its scores are at hand, in the same pass: one
exponential per score instead of two, and nothing of size n × |V| kept for backward.

The gradients w.r.t. ``h`` and ``table`` are therefore computed in the forward pass and
scaled by the incoming gradient in backward. This is a first-order function: it cannot be
differentiated twice (``once_differentiable``), which is all that full-data training and
the outer loss need; the inner loop, which needs second order, keeps the plain form.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

#: scores per chunk (rows × |V|): 1 MB of float32, so that a chunk stays in cache between
#: its matmul, its exponential and its two gradient matmuls
CHUNK_SCORES = 1 << 18
#: on a GPU the point is memory, not cache: 256 MB chunks keep the kernels few and large
CHUNK_SCORES_CUDA = 1 << 26


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, table: torch.Tensor, target: torch.Tensor, bias, chunk: int):
        n = h.shape[0]
        need_h, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if need_h else None
        grad_table = torch.zeros_like(table) if need_table else None
        total = torch.zeros((), dtype=torch.float64, device=h.device)
        for start in range(0, n, chunk):
            hc, tc = h[start:start + chunk], target[start:start + chunk]
            s = hc @ table.T if bias is None else torch.addmm(bias, hc, table.T)  # (c, V) scores
            picked = s.gather(1, tc[:, None])                  # (c, 1) the targets' scores
            top = s.amax(1, keepdim=True)                      # (c, 1)
            s.sub_(top).exp_()                                 # exp(s - max), in place
            z = s.sum(1, keepdim=True)                         # (c, 1)
            total += (top + z.log() - picked).sum(dtype=torch.float64)
            if need_h or need_table:
                s.div_(z)                                      # softmax
                s.scatter_add_(1, tc[:, None], s.new_full((len(tc), 1), -1.0))  # − one-hot
                s.div_(n)                                      # d(mean)/d(scores)
                if need_h:
                    torch.mm(s, table, out=grad_h[start:start + chunk])
                if need_table:
                    grad_table.addmm_(s.T, hc)
        ctx.save_for_backward(grad_h, grad_table)
        return (total / n).to(h.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        grad_h, grad_table = ctx.saved_tensors
        return (grad_h * grad_out if grad_h is not None else None,
                grad_table * grad_out if grad_table is not None else None, None, None, None)


def linear_cross_entropy(h: torch.Tensor, table: torch.Tensor, target: torch.Tensor,
                         bias: torch.Tensor | None = None, chunk_scores: int | None = None) -> torch.Tensor:
    """Mean over rows of −log softmax(h · tableᵀ + bias)[target].

    h (n, d) features; table (V, d) the candidates' embeddings; target (n,) indices into
    table's rows; bias (V,) a constant added to every row's scores (no gradient: the
    sampled-softmax correction of ``td3.candidates``). Equal to
    ``F.cross_entropy(h @ table.T + bias, target)`` up to rounding.
    """
    if h.shape[0] == 0:
        raise ValueError("linear_cross_entropy: no rows (every position was padding)")
    if chunk_scores is None:
        chunk_scores = CHUNK_SCORES_CUDA if h.is_cuda else CHUNK_SCORES
    chunk = max(1, chunk_scores // max(1, table.shape[0]))
    if bias is not None:
        bias = bias.detach()
    return _LinearCrossEntropy.apply(h, table, target, bias, chunk)
