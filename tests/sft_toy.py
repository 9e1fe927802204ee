"""Tiny synthetic data, SIDs and tokenizer for the tasks/SFT tests (contract-shaped stand-ins).

`ToySids` and `ToyTokenizer` implement the parts of `SemanticIds` / `Tokenizer` (docs/DESIGN.md)
that tasks and the trainer use, so these tests run without the index or model stages.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from gream_jax.data.split import Split
from gream_jax.data.types import ItemText

GENRES = ("drama", "comedy", "action", "horror", "romance")


@dataclasses.dataclass
class ToySids:
    codes: np.ndarray
    lengths: np.ndarray
    level_sizes: tuple

    def token(self, level, code):
        return f"<{'abcde'[level]}_{int(code)}>"

    def item_tokens(self, item):
        return [self.token(l, self.codes[item, l]) for l in range(int(self.lengths[item]))]

    def item_string(self, item):
        return "".join(self.item_tokens(item))

    def all_tokens(self):
        return [self.token(l, c) for l, k in enumerate(self.level_sizes) for c in range(k)]


def toy_sids(n_items: int, k: int = 4) -> ToySids:
    """Two semantic levels + an item-unique last token (the ML-100k scheme)."""
    codes = np.stack([np.arange(n_items) % k, (np.arange(n_items) // k) % k, np.arange(n_items)], 1)
    return ToySids(codes.astype(np.int32), np.full(n_items, 3, np.int32), (k, k, n_items))


class ToyTokenizer:
    """Whitespace/punctuation word tokenizer with special tokens and added SID tokens."""

    SPECIAL = ("<pad>", "<eos>", "<unk>", "<|im_start|>", "<|im_end|>", "<think>", "</think>",
               "<answer>", "</answer>")

    def __init__(self, words, extra_tokens=()):
        self.vocab = {}
        for w in list(self.SPECIAL) + sorted(set(words)) + list(extra_tokens):
            self.vocab.setdefault(w, len(self.vocab))
        self.inv = {i: w for w, i in self.vocab.items()}
        self._split = re.compile(r"<\|im_start\|>|<\|im_end\|>|</?think>|</?answer>|\w+|[^\w\s]")

    pad_id, eos_id = 0, 1

    @property
    def vocab_size(self):
        return len(self.vocab)

    def token_to_id(self, tok):
        return self.vocab.get(tok)

    def encode(self, text):
        return [self.vocab.get(w, 2) for w in self._split.findall(text)]

    def decode(self, ids):
        return " ".join(self.inv[int(i)] for i in ids)


def toy_items(n_items: int) -> list[ItemText]:
    return [ItemText(title=f"Movie {i} ({1970 + 10 * (i % 3)})", brand="",
                     categories=", ".join(sorted({GENRES[i % 5], GENRES[(i // 2) % 5]})),
                     description=f"A story number {i}.", reviews=[]) for i in range(n_items)]


def toy_split(n_users: int = 12, n_items: int = 30, seed: int = 0, min_len: int = 8, max_len: int = 26,
              max_history: int = 20) -> Split:
    """Random sequences; the valid/test targets of every user are items >= n_items - 4 reserved for
    them, so any leak of a held-out target into training examples is detectable by item id."""
    rng = np.random.default_rng(seed)
    held = np.arange(n_items - 4, n_items)
    train = [rng.integers(0, n_items - 4, int(rng.integers(min_len, max_len))).astype(np.int32)
             for _ in range(n_users)]
    return Split(train=train, valid_targets=rng.choice(held, n_users).astype(np.int32),
                 test_targets=rng.choice(held, n_users).astype(np.int32), max_history=max_history)


def toy_vocab_words(items) -> list[str]:
    from gream_jax.tasks import templates
    words = set()
    splitter = re.compile(r"\w+|[^\w\s]")
    for group in templates.ALL.values():
        for t in group:
            words.update(splitter.findall(t))
    for it in items:
        words.update(splitter.findall(f"{it.title} {it.categories} {it.description}"))
    words.update(splitter.findall(
        "Step 1 2 3 4 5 behavioural evidence of the items form a consistent thread most recently "
        "share no clear each is weak signal latent preferences recency weighted carry attributes to "
        "aggregate intent latest relevant point to and same semantic group no recent item stands "
        "out so open recommendation an that is from denoised history listed user mostly prefers "
        "gives attribute preference 0123456789 . , ; : ( ) \" 1970s 1980s 1990s s"))
    return sorted(words)


def toy_world(n_users=12, n_items=30, seed=0):
    """(split, sids, items, tokenizer) consistent with each other."""
    split = toy_split(n_users, n_items, seed)
    sids = toy_sids(n_items)
    items = toy_items(n_items)
    tok = ToyTokenizer(toy_vocab_words(items), sids.all_tokens())
    return split, sids, items, tok


def tiny_config(steps: int = 8, checkpoint_every: int = 0, **train_overrides):
    """A full config (all sections) shrunk for the toy world and a 1-layer model."""
    from gream_jax.config_defaults import base_config
    c = base_config()
    c.data.max_history = 6
    c.tasks.examples = {"seqrec": 8, "item2index": 4, "index2item": 4, "fusionseqrec": 4,
                        "itemsearch": 4, "preferenceobtain": 4}
    c.tasks.reasoning_examples = 8
    c.tasks.reasoning_ratio = 0.5
    c.train.update(steps=steps, batch_size=8, seq_len=96, reasoning_seq_len=288, reasoning_batch_size=4, warmup_steps=2, lr=3e-3, log_every=2,
                   checkpoint_every=checkpoint_every, eval_every=0, keep_checkpoints=2)
    c.eval.update(beam_size=10, top_k=10, max_batch=16)
    c.train.update(**train_overrides)
    return c


def tiny_inputs(config, devices, n_users=12, n_items=30):
    """SftInputs for the toy world: a 1-layer, 32-wide Qwen3 with random weights on `devices`."""
    import jax
    from gream_jax import mesh as mesh_lib
    from gream_jax.model import api
    from gream_jax.model.config import ModelConfig
    from gream_jax.train.sft_stage import SftInputs
    split, sids, items, tok = toy_world(n_users, n_items)
    split.max_history = int(config.data.max_history)
    mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, devices)
    rules = mesh_lib.DEFAULT_RULES
    model_cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_layers=1,
                            num_heads=2, num_kv_heads=1, head_dim=16, max_position_embeddings=512)
    params = api.init_params(model_cfg, jax.random.PRNGKey(0), mesh, rules)
    return SftInputs(split, sids, items, model_cfg, params, tok, mesh, rules)
