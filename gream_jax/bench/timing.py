"""Step timing and environment capture shared by the JAX and PyTorch sides.

Every measurement is split into the first call(s) (compilation / warm-up, reported on their
own) and `steps` timed calls whose median is the figure; the callable must block until its
result is ready (the sides pass `jax.block_until_ready` / `torch.cuda.synchronize`).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import sys
import time
from typing import Callable


@dataclasses.dataclass
class Timing:
    first_s: float            # the first call: compilation + one step
    warmup_s: float           # the remaining warm-up calls, in total
    step_s: list[float]       # every timed call

    @property
    def median_s(self) -> float:
        return statistics.median(self.step_s)

    def to_dict(self) -> dict:
        return {"first_s": self.first_s, "warmup_s": self.warmup_s, "median_s": self.median_s,
                "min_s": min(self.step_s), "max_s": max(self.step_s), "steps": len(self.step_s)}


def time_calls(step: Callable[[], object], steps: int, warmup: int,
               budget_s: float | None = None) -> Timing:
    """Times `step()`: 1 first call + (warmup - 1) more untimed, then `steps` timed calls.

    `budget_s` stops the timed loop early (after at least 3 calls) so that a slow baseline
    on a big preset cannot eat a fixed time budget; the count actually timed is reported.
    """
    if steps < 1:
        raise ValueError(f"steps={steps}: need at least one timed step")
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(max(warmup - 1, 0)):
        step()
    warm = time.perf_counter() - t0
    times = []
    start = time.perf_counter()
    for i in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        if budget_s is not None and i >= 2 and time.perf_counter() - start > budget_s:
            break
    return Timing(first, warm, times)


def environment(with_jax: bool = True, with_torch: bool = True) -> dict:
    """Versions, threads and devices, recorded next to every result.

    Each worker records only its own framework: asking JAX for its devices inside the PyTorch
    process would make JAX grab most of the accelerator's memory."""
    env = {"python": sys.version.split()[0], "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    try:
        if not with_jax:
            raise ImportError("skipped")
        import jax
        import jaxlib
        env.update(jax=jax.__version__, jaxlib=jaxlib.__version__,
                   jax_backend=jax.default_backend(), jax_devices=len(jax.devices()),
                   jax_device_kind=jax.devices()[0].device_kind)
        import flax
        import optax
        env.update(flax=flax.__version__, optax=optax.__version__)
    except Exception as e:  # recorded, never fatal: the environment is a description
        if with_jax:
            env["jax_error"] = repr(e)
    try:
        if not with_torch:
            raise ImportError("skipped")
        import torch
        import transformers
        env.update(torch=torch.__version__, transformers=transformers.__version__,
                   torch_threads=torch.get_num_threads(),
                   torch_cuda=torch.cuda.is_available(),
                   torch_device=(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"))
    except Exception as e:
        if with_torch:
            env["torch_error"] = repr(e)
    for var in ("XLA_FLAGS", "OMP_NUM_THREADS", "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES"):
        if os.environ.get(var):
            env[var] = os.environ[var]
    return env
