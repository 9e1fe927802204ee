"""Tokenisation, packing with segment ids, and a checkpointable batch stream.

Examples (token ids + a target mask marking the tokens the loss is on) are packed greedily, in a
seeded shuffled order, into rows of exactly `seq_len` tokens: every batch has one shape, so the
train step compiles once. `segment_ids` (1, 2, ... per example; 0 = padding) let the model's
attention respect example boundaries; `positions` restart at 0 in each example.

A `PackedStream` is random-access and a pure function of (seed, epoch, batch index): its whole
iterator state is the number of batches consumed, saved with every checkpoint, so a resumed run
sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from gream_jax.tasks.tokens import encode_text


@dataclasses.dataclass
class TokenStats:
    """What tokenisation had to do to fit `seq_len`; reported in the SFT summary."""
    examples: int = 0
    tokens: int = 0
    target_tokens: int = 0
    truncated_prompts: int = 0     # prompt cut from the left to fit
    dropped: int = 0               # response alone longer than the row: example skipped

    def add(self, other: "TokenStats") -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def fit_to_length(ids: list[int], mask: list[int], seq_len: int, stats: TokenStats
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """Left-truncates the non-target prefix so the example fits; None if the targets alone do not."""
    if len(ids) > seq_len:
        first_target = mask.index(1) if 1 in mask else len(mask)
        cut = len(ids) - seq_len
        if cut > max(first_target - 1, 0):     # keep >= 1 context token before the first target
            stats.dropped += 1
            return None
        ids, mask = ids[cut:], mask[cut:]
        stats.truncated_prompts += 1
    stats.examples += 1
    stats.tokens += len(ids)
    stats.target_tokens += int(sum(mask))
    return np.asarray(ids, np.int32), np.asarray(mask, np.uint8)


def tokenize_chat(tokenizer, examples, seq_len: int, stats: TokenStats) -> list[tuple[np.ndarray, np.ndarray]]:
    """Chat examples -> (ids, target mask); the loss covers the response (incl. its end marker)."""
    out = []
    for ex in examples:
        p, r = encode_text(tokenizer, ex.prompt), encode_text(tokenizer, ex.response)
        fitted = fit_to_length(p + r, [0] * len(p) + [1] * len(r), seq_len, stats)
        if fitted is not None:
            out.append(fitted)
    return out


def pack(examples: list[tuple[np.ndarray, ...]], seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """Greedy in-order packing into [rows, seq_len] arrays: tokens, segment_ids, positions, targets,
    unlikely. An example is (ids, target mask) or (ids, target mask, unlikely mask); `unlikely`
    (tokens whose probability the loss pushes down: dense windows' repeat negatives) is 0 for
    examples without it."""
    rows: list[list[int]] = []
    fill = seq_len  # force a new row for the first example
    for k, (ids, *_) in enumerate(examples):
        if len(ids) > seq_len:
            raise ValueError(f"example {k} has {len(ids)} tokens > seq_len={seq_len}; fit_to_length first")
        if fill + len(ids) > seq_len:
            rows.append([])
            fill = 0
        rows[-1].append(k)
        fill += len(ids)
    n = len(rows)
    tokens = np.full((n, seq_len), pad_id, np.int32)
    segments = np.zeros((n, seq_len), np.int32)
    positions = np.zeros((n, seq_len), np.int32)
    targets = np.zeros((n, seq_len), np.uint8)
    unlikely = np.zeros((n, seq_len), np.uint8)
    for r, members in enumerate(rows):
        at = 0
        for s, k in enumerate(members, start=1):
            ids, mask = examples[k][:2]
            m = len(ids)
            tokens[r, at:at + m] = ids
            segments[r, at:at + m] = s
            positions[r, at:at + m] = np.arange(m)
            targets[r, at:at + m] = mask
            if len(examples[k]) > 2:
                unlikely[r, at:at + m] = examples[k][2]
            at += m
    return {"tokens": tokens, "segment_ids": segments, "positions": positions, "targets": targets,
            "unlikely": unlikely}


class PackedStream:
    """Batches of packed rows over endless epochs; `epoch_examples(epoch)` must be deterministic.

    State: {"consumed": batches handed out}. Epoch e's rows are the packed examples of
    `epoch_examples(e)` in a permutation seeded by (seed, e); an epoch's incomplete last batch is
    dropped so batch shapes never change.
    """

    def __init__(self, name: str, epoch_examples: Callable[[int], list], batch_rows: int,
                 seq_len: int, pad_id: int, seed: int):
        self.name, self.epoch_examples, self.batch_rows = name, epoch_examples, batch_rows
        self.seq_len, self.pad_id, self.seed = seq_len, pad_id, seed
        self.consumed = 0
        self._epoch, self._epoch_start, self._rows, self._n_batches = -1, 0, None, 0
        self.epochs_built = 0

    def _build(self, epoch: int) -> None:
        examples = self.epoch_examples(epoch)
        order = np.random.default_rng([self.seed, 0xE90C, epoch]).permutation(len(examples))
        rows = pack([examples[i] for i in order], self.seq_len, self.pad_id)
        n_batches = len(rows["tokens"]) // self.batch_rows
        if n_batches == 0:
            raise ValueError(f"{self.name} stream: epoch {epoch} packs into {len(rows['tokens'])} rows of "
                             f"{self.seq_len} tokens, fewer than one batch of {self.batch_rows} rows; "
                             f"lower config.train.batch_size or add training data")
        self._rows, self._n_batches = rows, n_batches
        self.epochs_built += 1

    def _seek(self, index: int) -> None:
        if self._epoch < 0 or index < self._epoch_start:
            self._epoch, self._epoch_start = 0, 0
            self._build(0)
        while index >= self._epoch_start + self._n_batches:
            self._epoch_start += self._n_batches
            self._epoch += 1
            self._build(self._epoch)

    def batch(self, index: int) -> dict[str, np.ndarray]:
        self._seek(index)
        b = index - self._epoch_start
        sl = slice(b * self.batch_rows, (b + 1) * self.batch_rows)
        return {k: v[sl] for k, v in self._rows.items()}

    def next(self) -> dict[str, np.ndarray]:
        out = self.batch(self.consumed)
        self.consumed += 1
        return out

    @property
    def epoch(self) -> int:
        return max(self._epoch, 0)

    def get_state(self) -> dict:
        return {"consumed": int(self.consumed)}

    def set_state(self, state: dict) -> None:
        self.consumed = int(state["consumed"])
