"""Progress lines (rate + ETA) and TensorBoard-format scalar summaries in the workdir."""

from __future__ import annotations

import os
import time

import jax
from absl import logging


class Progress:
    """Logs `done/total, rate unit/s, ETA` at most every `every_s` seconds.

    Usage: p = Progress("encode", total=n, unit="items"); p.update(k); ...; p.close()
    """

    def __init__(self, name: str, total: int | None, unit: str = "items", every_s: float = 10.0):
        self.name, self.total, self.unit, self.every_s = name, total, unit, every_s
        self.done = 0
        self.start = self.last = time.perf_counter()

    def update(self, n: int = 1, extra: str = "") -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every_s or (self.total is not None and self.done >= self.total):
            self.last = now
            logging.info("%s", self.line(extra))

    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.start, 1e-9)

    def line(self, extra: str = "") -> str:
        rate = self.rate()
        parts = [f"[{self.name}] {self.done}" + (f"/{self.total}" if self.total else ""),
                 f"{rate:,.1f} {self.unit}/s"]
        if self.total and rate > 0:
            parts.append(f"ETA {format_seconds((self.total - self.done) / rate)}")
        if extra:
            parts.append(extra)
        return ", ".join(parts)

    def close(self) -> float:
        """Returns elapsed seconds."""
        return time.perf_counter() - self.start


def format_seconds(s: float) -> str:
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


class SummaryWriter:
    """Scalar summaries readable by TensorBoard, written only by process 0."""

    def __init__(self, logdir: str):
        self._writer = None
        if jax.process_index() == 0:
            from tensorboardX import SummaryWriter as _TBWriter
            os.makedirs(logdir, exist_ok=True)
            self._writer = _TBWriter(logdir)

    def scalars(self, step: int, values: dict) -> None:
        if self._writer is None:
            return
        for k, v in values.items():
            # TensorBoard tags allow [A-Za-z0-9_./-]: "valid/recall@10" is written as "valid/recall_10"
            # (what tensorboardX would do itself, with a warning per call).
            self._writer.add_scalar(k.replace("@", "_"), float(v), int(step))

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
