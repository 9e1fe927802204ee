"""LC-Rec alignment tasks (GREAM's collaborative-semantic alignment), as chat examples.

Every interaction-based example (seqrec, fusionseqrec, itemsearch, preferenceobtain) is built from
the training part of `Split` only: targets are training items at position >= 1 and histories are
the items before them, so no validation or test target can appear. item2index / index2item use
item metadata (title, description), which is not an interaction.
"""

from __future__ import annotations

import numpy as np

from gream_jax.tasks import templates
from gream_jax.tasks.attributes import short_description, short_title
from gream_jax.tasks.example import Example, chat_prompt, chat_response
from gream_jax.tasks.preferences import preference_text, top_attributes


def training_targets(train: list[np.ndarray], min_position: int = 1, last_offset: int = 0
                     ) -> np.ndarray:
    """[n, 2] (user, position) of every training target with `min_position <= position < len - last_offset`."""
    rows = [(u, p) for u, seq in enumerate(train) for p in range(min_position, len(seq) - last_offset)]
    return np.asarray(rows, np.int64).reshape(-1, 2)


def sample_rows(rows: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` rows without replacement (all of them, shuffled, when count is -1 or too large)."""
    if count < 0 or count >= len(rows):
        return rows[rng.permutation(len(rows))]
    return rows[rng.choice(len(rows), size=count, replace=False)]


class AlignmentBuilder:
    """Builds each task's examples; `sids` is a SemanticIds, `items` the ItemText list."""

    def __init__(self, split, sids, items, attributes, max_history: int, recency_decay: float):
        self.split, self.sids, self.items, self.attrs = split, sids, items, attributes
        self.max_history, self.decay = max_history, recency_decay

    def _history(self, u: int, p: int) -> np.ndarray:
        seq = self.split.train[u]
        return seq[max(0, p - self.max_history):p]

    def _hist_sids(self, history) -> str:
        return ", ".join(self.sids.item_string(int(i)) for i in history)

    def _hist_titles(self, history) -> str:
        return "; ".join(f"\"{short_title(self.items[int(i)], 60)}\"" for i in history[-10:])

    @staticmethod
    def _pick(rng, options):
        return options[int(rng.integers(len(options)))]

    def seqrec(self, rows, rng) -> list[Example]:
        out = []
        for u, p in rows:
            hist, target = self._history(u, p), int(self.split.train[u][p])
            prompt = self._pick(rng, templates.SEQREC).format(history=self._hist_sids(hist))
            out.append(Example("seqrec", chat_prompt(prompt), chat_response(self.sids.item_string(target)),
                               tuple(int(i) for i in hist) + (target,)))
        return out

    def fusionseqrec(self, rows, rng) -> list[Example]:
        out = []
        for u, p in rows:
            hist, target = self._history(u, p), int(self.split.train[u][p])
            if rng.random() < 0.5:
                prompt = self._pick(rng, templates.FUSION_TITLE).format(history=self._hist_sids(hist))
                answer = short_title(self.items[target])
            else:
                prompt = self._pick(rng, templates.FUSION_SID).format(history_titles=self._hist_titles(hist))
                answer = self.sids.item_string(target)
            out.append(Example("fusionseqrec", chat_prompt(prompt), chat_response(answer),
                               tuple(int(i) for i in hist) + (target,)))
        return out

    def itemsearch(self, rows, rng) -> list[Example]:
        out = []
        for u, p in rows:
            hist, target = self._history(u, p), int(self.split.train[u][p])
            attrs = self.attrs[target]
            if not attrs:
                continue
            chosen = [attrs[i] for i in sorted(rng.choice(len(attrs), size=min(2, len(attrs)), replace=False))]
            query = self._pick(rng, templates.QUERY).format(attrs=" and ".join(chosen))
            pref = preference_text(top_attributes(hist, self.attrs, self.decay))
            prompt = self._pick(rng, templates.ITEMSEARCH).format(
                preference=pref, preference_lc=pref[0].lower() + pref[1:].rstrip("."), query=query)
            out.append(Example("itemsearch", chat_prompt(prompt), chat_response(self.sids.item_string(target)),
                               tuple(int(i) for i in hist) + (target,)))
        return out

    def preferenceobtain(self, rows, rng) -> list[Example]:
        out = []
        for u, p in rows:
            hist = self.split.train[u][max(0, p - self.max_history + 1):p + 1]  # up to and incl. p
            if len(hist) == 0:
                continue
            prompt = self._pick(rng, templates.PREFERENCE).format(history=self._hist_sids(hist))
            answer = preference_text(top_attributes(hist, self.attrs, self.decay))
            out.append(Example("preferenceobtain", chat_prompt(prompt), chat_response(answer),
                               tuple(int(i) for i in hist)))
        return out

    def item2index(self, item_ids, rng) -> list[Example]:
        out = []
        for i in item_ids:
            text = self.items[int(i)]
            if not text.title:
                continue
            prompt = self._pick(rng, templates.ITEM2INDEX).format(
                title=short_title(text), description=short_description(text) or "")
            out.append(Example("item2index", chat_prompt(prompt), chat_response(self.sids.item_string(int(i))),
                               (int(i),)))
        return out

    def index2item(self, item_ids, rng) -> list[Example]:
        out = []
        for i in item_ids:
            text = self.items[int(i)]
            if not text.title:
                continue
            sid = self.sids.item_string(int(i))
            desc = short_description(text)
            if desc and rng.random() < 0.3:
                prompt = self._pick(rng, templates.INDEX2ITEM_DESCRIPTION).format(sid=sid)
                answer = f"{short_title(text)}: {desc}"
            else:
                prompt = self._pick(rng, templates.INDEX2ITEM).format(sid=sid)
                answer = short_title(text)
            out.append(Example("index2item", chat_prompt(prompt), chat_response(answer), (int(i),)))
        return out


def build_alignment_examples(builder: AlignmentBuilder, counts: dict, rng: np.random.Generator
                             ) -> list[Example]:
    """One epoch of prompt-style examples: `counts[task]` each (-1 = all, 0 = none), fresh templates."""
    out: list[Example] = []
    targets = training_targets(builder.split.train)
    n_items = len(builder.items)
    for task in ("seqrec", "fusionseqrec", "itemsearch", "preferenceobtain"):
        n = int(counts.get(task, 0))
        if n and len(targets):
            out.extend(getattr(builder, task)(sample_rows(targets, n, rng), rng))
    for task in ("item2index", "index2item"):
        n = int(counts.get(task, 0))
        if n:
            ids = rng.permutation(n_items) if n < 0 or n >= n_items else rng.choice(n_items, n, replace=False)
            out.extend(getattr(builder, task)(ids, rng))
    return out
