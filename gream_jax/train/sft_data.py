"""The two SFT example streams (alignment, reasoning), tokenised and packed per epoch.

Each epoch is a pure function of (config.seed, epoch): dense windows get fresh random offsets and
prompt tasks fresh templates/samples every epoch (the reference builds three passes with fresh
templates). Both streams are `PackedStream`s whose state is saved in every checkpoint.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gream_jax.tasks.alignment import AlignmentBuilder, build_alignment_examples
from gream_jax.tasks.attributes import all_item_attributes
from gream_jax.tasks.dense import dense_windows, window_tokens, with_repeat_negative
from gream_jax.tasks.reasoning import build_reasoning_examples
from gream_jax.tasks.tokens import bos_id, item_token_ids, sid_ids
from gream_jax.train.batching import PackedStream, TokenStats, fit_to_length, tokenize_chat


class EmptyTrainingSet(ValueError):
    """No usable SFT example (no user with two training items, every task off, or all dropped)."""


@dataclasses.dataclass
class SftStreams:
    alignment: PackedStream
    reasoning: PackedStream | None
    stats: dict                     # epoch-0 tokenisation report per stream


def fit_window(items: np.ndarray, table: np.ndarray, bos: int, seq_len: int, stats: TokenStats,
               rng: np.random.Generator | None = None):
    """A dense window that fits `seq_len`: the oldest items are dropped (counted) until it does.
    With `rng`, a repeat negative (one of the window's items, uniformly) is appended
    (`tasks.dense.with_repeat_negative`) and the result is (ids, target mask, unlikely mask)."""
    negative = None if rng is None else int(items[rng.integers(len(items))])
    extra = 0 if negative is None else len(sid_ids(table, negative))
    ids, mask = window_tokens(items, table, bos)
    if len(ids) + extra > seq_len:
        stats.truncated_prompts += 1
        while len(items) > 1 and len(ids) + extra > seq_len:
            items = items[1:]
            ids, mask = window_tokens(items, table, bos)
    if len(items) < 2 or len(ids) + extra > seq_len:
        stats.dropped += 1
        return None
    if negative is None:
        return fit_to_length(ids, mask, seq_len, stats)
    if negative not in items:               # dropped with the oldest items: pick again from the rest
        negative = int(items[rng.integers(len(items))])
    ids, mask, unlikely = with_repeat_negative(ids, mask, table, negative)
    return fit_to_length(ids, mask, seq_len, stats) + (np.asarray(unlikely, np.uint8),)


def make_streams(config, split, semantic_ids, items, tokenizer) -> SftStreams:
    t, tr = config.tasks, config.train
    table = item_token_ids(tokenizer, semantic_ids)
    bos, seq_len, seed = bos_id(tokenizer), int(tr.seq_len), int(config.seed)
    reasoning_len = int(tr.reasoning_seq_len)
    window = int(config.data.max_history) + 1
    attrs = all_item_attributes(items)
    builder = AlignmentBuilder(split, semantic_ids, items, attrs, int(config.data.max_history),
                               float(t.recency_decay))
    counts = {k: int(v) for k, v in t.examples.items()}
    stats: dict[str, dict] = {}

    def alignment_epoch(epoch: int):
        rng = np.random.default_rng([seed, 0xA11, epoch])
        st = TokenStats()
        out = []
        negatives = np.random.default_rng([seed, 0x4E6, epoch]) if float(tr.repeat_unlikelihood) > 0 else None
        if t.dense_seqrec:
            for _, w in dense_windows(split.train, window, int(t.dense_stride), rng):
                fitted = fit_window(w, table, bos, seq_len, st, negatives)
                if fitted is not None:
                    out.append(fitted)
        n_dense = len(out)
        out += tokenize_chat(tokenizer, build_alignment_examples(builder, counts, rng), seq_len, st)
        if epoch == 0:
            stats["alignment"] = dict(dataclasses.asdict(st), dense_windows=n_dense, prompt_examples=len(out) - n_dense)
        if not out:
            raise EmptyTrainingSet(
                "SFT alignment stream is empty: no user has >= 2 training items and no prompt task "
                "produced an example (check WORKDIR/data and config.tasks.examples)")
        return out

    def reasoning_epoch(epoch: int):
        rng = np.random.default_rng([seed, 0x7EA5, epoch])
        st = TokenStats()
        exs = build_reasoning_examples(split, semantic_ids, items, attrs, int(t.reasoning_examples),
                                       int(config.data.max_history), int(t.reasoning_min_history),
                                       float(t.recency_decay), rng)
        out = tokenize_chat(tokenizer, exs, reasoning_len, st)
        if epoch == 0:
            stats["reasoning"] = dataclasses.asdict(st)
        if not out:
            raise EmptyTrainingSet(
                f"SFT reasoning stream is empty: no training target at position >= "
                f"{t.reasoning_min_history} fits config.train.reasoning_seq_len={reasoning_len}; set "
                f"config.tasks.reasoning_ratio=0 or raise it")
        return out

    rows = int(tr.batch_size)
    align = PackedStream("alignment", alignment_epoch, rows, seq_len, int(tokenizer.pad_id), seed)
    reason = None
    if float(t.reasoning_ratio) > 0 and int(t.reasoning_examples) != 0:
        reason = PackedStream("reasoning", reasoning_epoch, int(tr.reasoning_batch_size), reasoning_len,
                              int(tokenizer.pad_id), seed + 1)
    return SftStreams(align, reason, stats)
