"""Which stream (alignment or reasoning) each SFT step draws from: a pure function of the step.

`linear_ramp` follows the reference: training is split in three parts; in parts 1 and 2 a
reasoning batch follows alignment batch i (of N in the part) with probability
p_i = (i / N) * ratio * 1.5, ratio = N_reason / N_align; part 3 mixes the streams uniformly.
Expressed per step, an insertion probability p after an alignment batch makes a step a reasoning
step with probability p / (1 + p). `uniform_mix` uses ratio / (1 + ratio) throughout;
`sequential` trains alignment first, then reasoning for the last ratio / (1 + ratio) of the steps.
"""

from __future__ import annotations

import numpy as np


def reasoning_probability(step: int, total_steps: int, ratio: float, schedule: str) -> float:
    """Probability that `step` (0-based) is a reasoning step."""
    if ratio <= 0 or total_steps <= 0:
        return 0.0
    uniform = ratio / (1.0 + ratio)
    if schedule == "uniform_mix":
        return uniform
    if schedule == "sequential":
        return 1.0 if step >= round(total_steps * (1.0 - uniform)) else 0.0
    if schedule == "linear_ramp":
        part_len = total_steps / 3.0
        part = min(int(step // part_len), 2)
        if part == 2:
            return uniform
        i = step - part * part_len
        p_insert = (i / part_len) * ratio * 1.5
        return p_insert / (1.0 + p_insert)
    raise ValueError(f"config.tasks.curriculum={schedule!r}: unknown schedule")


def is_reasoning_step(step: int, total_steps: int, ratio: float, schedule: str, seed: int) -> bool:
    """Deterministic draw for one step (counter-based: independent of every other step)."""
    p = reasoning_probability(step, total_steps, ratio, schedule)
    if p <= 0.0:
        return False
    if p >= 1.0:
        return True
    return bool(np.random.default_rng([seed, 0x5EA5, step]).random() < p)


def stream_plan(total_steps: int, ratio: float, schedule: str, seed: int) -> np.ndarray:
    """[total_steps] bool: True where the step is a reasoning step."""
    return np.array([is_reasoning_step(s, total_steps, ratio, schedule, seed) for s in range(total_steps)],
                    dtype=bool)
