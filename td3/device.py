"""The device a run computes on, and what CUDA needs before it starts (docs/gpu.md).

``device=auto`` (the default) is CUDA when torch sees a GPU, else the CPU. Under SLURM and
Ray a job sees only the GPUs it was given (both set ``CUDA_VISIBLE_DEVICES``), so "cuda"
is always the job's own GPU.

Deterministic runs on CUDA: every run turns on torch's deterministic algorithms
(``use_deterministic_algorithms``). For cuBLAS that needs a fixed workspace,
``CUBLAS_WORKSPACE_CONFIG=:4096:8``, which torch reads when the process first uses
cuBLAS; set later, it changes nothing for that process. ``prepare_cuda`` sets it before a
run touches CUDA. ``setup_runtime`` does all of it for a run: device, threads, determinism.
This module imports nothing of td3, so records and launchers can use it.
"""
from __future__ import annotations

import logging
import os
import sys

import torch

log = logging.getLogger("td3.device")

CUBLAS_VARIABLE = "CUBLAS_WORKSPACE_CONFIG"
#: The two values torch accepts as deterministic; the first is what td3 sets.
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")


def resolve_device(name: str | None) -> torch.device:
    """``auto`` / None: CUDA when a GPU is visible, else the CPU; anything else as given."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare_cuda() -> None:
    """Put a deterministic cuBLAS workspace in the environment, unless one is there.

    Harmless on a machine without CUDA (nothing reads the variable). A different value
    the user set is kept, with a warning: torch will then warn that cuBLAS is not
    deterministic, which is what that value asks for.
    """
    value = os.environ.get(CUBLAS_VARIABLE)
    if value in CUBLAS_DETERMINISTIC:
        return
    if value is not None:
        log.warning("%s=%s is not one of %s: cuBLAS results may differ between identical runs",
                    CUBLAS_VARIABLE, value, ", ".join(CUBLAS_DETERMINISTIC))
        return
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # too late for a workspace already made; the next process gets it from the start
        log.warning("CUDA started before %s was set: this process's cuBLAS may not be deterministic "
                    "(set %s=%s in the environment)", CUBLAS_VARIABLE, CUBLAS_VARIABLE,
                    CUBLAS_DETERMINISTIC[0])
    os.environ[CUBLAS_VARIABLE] = CUBLAS_DETERMINISTIC[0]


def cuda_rng_state() -> torch.Tensor | None:
    """The current GPU's random state (dropout and BERT4Rec's masks draw from it there), or
    None when this process has not used CUDA (reading it would start CUDA for nothing)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.get_rng_state()
    return None


def set_cuda_rng_state(state: torch.Tensor | None) -> None:
    """Restore what ``cuda_rng_state`` returned (nothing to do for None or without CUDA)."""
    if state is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state.cpu())  # torch takes a CPU ByteTensor


def setup_runtime(device: str | None = None, threads: int | None = None) -> torch.device:
    """Device and torch threads for a run. Give a process as many threads as it has cores:
    more makes OpenMP threads wait on each other (docs/performance.md, "Threads per process"). Without ``threads``,
    a SLURM job takes the CPUs it was given (SLURM_CPUS_PER_TASK).

    Deterministic algorithms: with several threads the backward pass through the inner loop
    otherwise differs between identical runs by rounding, which the outer steps amplify, so
    a run made with several threads could not be re-run bitwise. ``warn_only``: where an op
    has no deterministic kernel (on CUDA), the run goes on and says so. On CUDA, cuBLAS is
    only deterministic with a fixed workspace, set here before the run first touches the GPU."""
    prepare_cuda()
    threads = threads or os.environ.get("SLURM_CPUS_PER_TASK")
    if threads:
        torch.set_num_threads(int(threads))
    else:  # torch's default, one thread per core: right on a quiet machine only
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        warning = crowded(torch.get_num_threads(), os.cpu_count() or 1, load)
        if warning:
            log.warning(warning)
    use_deterministic_algorithms()
    return resolve_device(device)


def crowded(threads: int, cores: int, load: float) -> str | None:
    """The warning for a run taking ``threads`` torch threads (its default, one per core) on
    a machine whose other processes already keep ``load`` of its ``cores`` busy (the
    one-minute load average, read before the run starts), or None when the threads fit.
    Threads beyond the idle cores make OpenMP threads wait on each other, and every outer step
    waits with them (docs/performance.md, "Threads per process", has the measured slowdown)."""
    idle = max(1, cores - round(load))
    if threads <= 1 or threads <= idle:
        return None
    return (f"torch takes {threads} threads, but other processes keep about {load:.1f} of the "
            f"{cores} cores busy: threads beyond the idle cores wait on each other and a run can be "
            f"tens of times slower; pass threads={idle} (docs/performance.md, \"Threads per process\")")


def use_deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` without its other effect:
    it also sets the flag of torch's compiler (inductor), and importing that config imports
    ``torch._dynamo``, seconds per process, for a compiler no run uses. Where the
    compiler is already loaded, or torch lacks the flag's setter, the public call is used."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        setter(True, warn_only=True)
