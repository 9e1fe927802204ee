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


def fit_window(items: np.ndarray, table: np.ndarray, bos: int, seq_len: int, stats: TokenStats):
    """A dense window that fits `seq_len`: the oldest items are dropped (counted) until it does."""
    ids, mask = window_tokens(items, table, bos)
    if len(ids) > seq_len:
        stats.truncated_prompts += 1
        while len(items) > 1 and len(ids) > seq_len:
            items = items[1:]
            ids, mask = window_tokens(items, table, bos)
    if len(items) < 2 or len(ids) > seq_len:
        stats.dropped += 1
        return None
    return fit_to_length(ids, mask, seq_len, stats)


def repeat_negative_example(items: np.ndarray, table: np.ndarray, bos: int, seq_len: int,
                            rng: np.random.Generator, stats: TokenStats, last_only: bool = False):
    """A copy of a dense window cut after a random number of items k (uniform in 1..len), with one
    of those k items appended as a repeat negative (`tasks.dense.with_repeat_negative`):
    (ids, target mask, unlikely mask), or None if even one item and its negative do not fit.

    Why the random cut: with the negative always after a full window (21 items on ML-100k) the
    model learned the shortcut "the 22nd item is a repeat" and suppressed repeats only there (in
    training p(h | h1, h2) fell to 1e-4; after a 20-item prompt it stayed at 0.26-0.35, and the
    share of history items in the top 10 did not move)."""
    items = items[:int(rng.integers(1, len(items) + 1))]
    negative = int(items[rng.integers(len(items))])
    extra = len(sid_ids(table, negative))
    ids, mask = window_tokens(items, table, bos)
    while len(ids) + extra > seq_len and len(items) > 1:
        items = items[1:]
        ids, mask = window_tokens(items, table, bos)
    if negative not in items:               # dropped with the oldest items: pick again from the rest
        negative = int(items[rng.integers(len(items))])
    ids, mask, unlikely = with_repeat_negative(ids, mask, table, negative, last_only)
    if len(ids) > seq_len:
        stats.dropped += 1
        return None
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
        neg_rng = np.random.default_rng([seed, 0x4E6, epoch])
        neg_share = float(tr.repeat_negative_share) if float(tr.repeat_unlikelihood) > 0 else 0.0
        n_neg = 0
        if t.dense_seqrec:
            for _, w in dense_windows(split.train, window, int(t.dense_stride), rng):
                fitted = fit_window(w, table, bos, seq_len, st)
                if fitted is not None:
                    out.append(fitted)
                if neg_share > 0 and neg_rng.random() < neg_share:
                    negative = repeat_negative_example(w, table, bos, seq_len, neg_rng, st,
                                                       last_only=tr.repeat_unlikelihood_tokens == "last")
                    if negative is not None:
                        out.append(negative)
                        n_neg += 1
        n_dense = len(out) - n_neg
        out += tokenize_chat(tokenizer, build_alignment_examples(builder, counts, rng), seq_len, st)
        if epoch == 0:
            stats["alignment"] = dict(dataclasses.asdict(st), dense_windows=n_dense, repeat_negatives=n_neg,
                                      prompt_examples=len(out) - n_dense - n_neg)
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
                                       float(t.recency_decay), rng,
                                       group_as_token=str(config.model.sid_softmax) == "vocab",
                                       group_example=bool(t.reasoning_group_example),
                                       direction=str(t.reasoning_direction),
                                       style=str(t.reasoning_style))
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
