"""Synthetic five-stage chain-of-thought by reverse reasoning (GREAM's reasoning data), offline.

The generator sees the history and the true next item and writes statements that are true of the
data, phrased as if the target were unknown. Each stage is written around an *anchor* item:
  1 behavioural evidence  - history items that share an attribute (or the first SID code) with the anchor;
  2 latent preference     - attributes aggregated over the history with recency weights;
  3 intent inference      - what the most recent evidence items have in common with the anchor;
  4 recommendation        - the anchor's attributes (and semantic group), without naming it;
  5 denoised rewrite      - the history with off-intent items removed, order kept (a subsequence).
Output: `<think>` stages 1-4 `</think>` rewrite `<answer>`SID`</answer>`, the answer always the target.

Direction (`config.tasks.reasoning_direction`): "reverse" (GREAM) anchors on the target itself, so a
chain rationalises an answer the model cannot see at inference; "forward" anchors on the latest
history item, so every stage is a function of the history alone: what the model writes at inference
is what it was trained on, and the chain is faithful to the input instead of guessing the target.

Style (`config.tasks.reasoning_style`): "full" writes each evidence item with its title and
attributes (~400 tokens on ML-100k); "compact" writes the same stages with SIDs and attribute words
only (no titles, at most five rewrite items), for small models that garble long free text.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from gream_jax.data.split import training_counts
from gream_jax.tasks import templates
from gream_jax.tasks.alignment import sample_rows, training_targets
from gream_jax.tasks.attributes import short_title
from gream_jax.tasks.example import (ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, Example,
                                     chat_prompt, chat_response)
from gream_jax.tasks.preferences import top_attributes


@dataclasses.dataclass(frozen=True)
class ReasoningChain:
    history: tuple[int, ...]
    target: int                               # the answer
    anchor: int                               # the item stages 1, 3 and 4 describe (module docstring)
    evidence: tuple[int, ...]                 # history items related to the anchor, in order
    preferences: tuple[tuple[str, float], ...]
    intent_items: tuple[int, ...]             # the most recent evidence items (<= 3)
    intent_attributes: tuple[str, ...]
    anchor_attributes: tuple[str, ...]
    rewrite: tuple[int, ...]                  # denoised history: a subsequence of `history`


def related(item: int, other: int, attributes, sids) -> list[str]:
    """Attributes `item` shares with `other`, plus "semantic group" when their first codes match."""
    shared = [a for a in attributes[item] if a in attributes[other]]
    if int(sids.codes[item, 0]) == int(sids.codes[other, 0]):
        shared.append("semantic group")
    return shared


DIRECTIONS = ("reverse", "forward")
STYLES = ("full", "compact")
COMPACT_REWRITE_ITEMS = 5


def reason(history, target: int, attributes, sids, decay: float, direction: str = "reverse") -> ReasoningChain:
    """The chain for `history -> target`, anchored on the target ("reverse") or on the latest history
    item ("forward"; an empty history falls back to the target)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"reason: direction={direction!r}; known: {DIRECTIONS}")
    history = tuple(int(i) for i in history)
    anchor = history[-1] if direction == "forward" and history else int(target)
    evidence = tuple(i for i in history if related(i, anchor, attributes, sids))
    intent_items = evidence[-3:]
    intent_attrs: list[str] = []
    for i in reversed(intent_items):
        for a in related(i, anchor, attributes, sids):
            if a != "semantic group" and a not in intent_attrs:
                intent_attrs.append(a)
    rewrite = evidence if evidence else history
    return ReasoningChain(history, int(target), int(anchor), evidence,
                          tuple(top_attributes(history, attributes, decay)),
                          tuple(intent_items), tuple(intent_attrs), tuple(attributes[anchor]), rewrite)


def _describe(item: int, items, attributes, sids) -> str:
    attrs = ", ".join(attributes[item][:3]) or "no listed attributes"
    return f"{sids.item_string(item)} (\"{short_title(items[item], 50)}\"; {attrs})"


def chain_text(chain: ReasoningChain, items, attributes, sids, group_as_token: bool = True,
               group_example: int | None = None, style: str = "full") -> str:
    """The response text: think block with stages 1-4, the rewrite (stage 5), the answer.

    `group_as_token=False` writes the anchor's semantic group (its first SID code; the anchor is the
    target in GREAM's reverse chains) as a number
    instead of the lone first-level SID token: a model with the trie or level softmax
    (config.model.sid_softmax != "vocab") can only continue an SID prefix with its trie children,
    so after `<a_7>` it must spell a whole item and could never write the "." and `</think>` that
    follow the group here (every sampled chain then skipped `</think>`, and SRPO's format check
    paid it nothing).

    `group_example` (with group_as_token=False; `config.tasks.reasoning_group_example`): an item of
    the anchor's group (`group_examples`), written whole, names the group instead of its number:
    "from semantic group of <a_7><b_2><c_311>". Why: a number is text the model must learn to
    map to the SID code `<a_7>` from the chains alone, and sampled chains named the right group at
    chance level while the answer ignored it (docs/results.md "Session 15"); an item's SID starts
    with the group's own token, which the answer can copy and which Direct mode's training shares.
    """
    if style not in STYLES:
        raise ValueError(f"chain_text: style={style!r}; known: {STYLES}")
    group = _step4_group(chain, sids, group_as_token, group_example)
    stages = (_compact_stages(chain, sids, group) if style == "compact"
              else _full_stages(chain, items, attributes, sids, group))
    s1, s2, s3, s4, s5 = stages
    return (f"{THINK_OPEN}{s1}\n{s2}\n{s3}\n{s4}{THINK_CLOSE}\n{s5}\n"
            f"{ANSWER_OPEN}{sids.item_string(chain.target)}{ANSWER_CLOSE}")


def _full_stages(chain: ReasoningChain, items, attributes, sids, group: str) -> tuple[str, ...]:
    """Stages 1-5 with each evidence item's title and attributes (GREAM's "full" style)."""
    n = len(chain.history)
    if chain.evidence:
        shown = chain.evidence[-5:]
        s1 = (f"Step 1, behavioural evidence: {len(chain.evidence)} of the {n} items form a consistent thread, "
              f"most recently " + "; ".join(_describe(i, items, attributes, sids) for i in shown) + ".")
    else:
        s1 = f"Step 1, behavioural evidence: the {n} items share no clear thread; each is a weak signal."
    if chain.preferences:
        s2 = ("Step 2, latent preferences (recency-weighted): " +
              ", ".join(f"{a} ({w:.2f})" for a, w in chain.preferences) + ".")
    else:
        s2 = "Step 2, latent preferences: the items carry no attributes to aggregate."
    if chain.intent_items:
        what = " and ".join(chain.intent_attributes) if chain.intent_attributes else "the same semantic group"
        s3 = ("Step 3, intent: the latest relevant items " +
              ", ".join(sids.item_string(i) for i in chain.intent_items) + f" point to {what}.")
    else:
        s3 = "Step 3, intent: no recent item stands out, so the intent is open."
    traits = ", ".join(chain.anchor_attributes[:4])
    s4 = (f"Step 4, recommendation: an item that is {traits}, from semantic group {group}." if traits
          else f"Step 4, recommendation: an item from semantic group {group}.")
    s5 = "Step 5, denoised history: " + ", ".join(sids.item_string(i) for i in chain.rewrite)
    return s1, s2, s3, s4, s5


def _step4_group(chain: ReasoningChain, sids, group_as_token: bool, group_example: int | None) -> str:
    """How Step 4 names the anchor's semantic group (`chain_text`'s docstring)."""
    code = int(sids.codes[chain.anchor, 0])
    if group_as_token:
        return sids.token(0, code)
    if group_example is not None:
        if int(sids.codes[group_example, 0]) != code:
            raise ValueError(f"chain_text: group example {group_example} is not in the anchor's semantic group {code}")
        return f"of {sids.item_string(group_example)}"
    return str(code)


def _compact_stages(chain: ReasoningChain, sids, group: str) -> tuple[str, ...]:
    """Stages 1-5 in SIDs and attribute words, no titles ("compact" style)."""
    sid = sids.item_string
    n = len(chain.history)
    s1 = (f"Step 1, evidence: {len(chain.evidence)} of {n} items, latest " + " ".join(sid(i) for i in chain.evidence[-3:])
          + "." if chain.evidence else f"Step 1, evidence: none of {n} items.")
    s2 = "Step 2, preferences: " + (", ".join(f"{a} {w:.1f}" for a, w in chain.preferences) or "none") + "."
    s3 = "Step 3, intent: " + (" and ".join(chain.intent_attributes) or "open") + "."
    traits = ", ".join(chain.anchor_attributes[:3])
    s4 = f"Step 4, recommendation: {traits + ', ' if traits else ''}semantic group {group}."
    s5 = "Step 5, denoised history: " + " ".join(sid(i) for i in chain.rewrite[-COMPACT_REWRITE_ITEMS:])
    return s1, s2, s3, s4, s5


# Step 4's group as `chain_text` writes it: a number or an example item's SID (trie / level
# softmax), or the lone first-level SID token (vocabulary softmax).
_STEP4_GROUP = re.compile(r"Step 4, recommendation:[^\n]*?semantic group (?:of )?(?:<a_)?(\d+)")


def named_group(text: str) -> int | None:
    """The semantic group (first SID code) a chain's step 4 names, or None when a sampled chain has
    no well-formed step 4. The inverse of `chain_text`'s step 4, for `eval.chain_checks`."""
    m = _STEP4_GROUP.search(text)
    return int(m.group(1)) if m else None


def group_examples(train_sequences, first_codes: np.ndarray) -> dict[int, list[int]]:
    """Each semantic group's items, most frequent in the training parts first (ties by item id):
    the candidates `pick_group_example` names a group by."""
    counts = training_counts(train_sequences, len(first_codes))
    order = sorted(range(len(first_codes)), key=lambda i: (-int(counts[i]), i))
    out: dict[int, list[int]] = {}
    for i in order:
        out.setdefault(int(first_codes[i]), []).append(i)
    return out


def pick_group_example(examples: dict[int, list[int]], group: int, exclude) -> int | None:
    """The most frequent item of `group` that is not in `exclude` (the target and the history: the
    chain must neither name the answer nor point back at the history), or None if there is none."""
    skip = set(int(i) for i in exclude)
    return next((i for i in examples.get(int(group), []) if i not in skip), None)


def reasoning_example(history, target, items, attributes, sids, decay, template: int,
                      group_as_token: bool = True, examples: dict[int, list[int]] | None = None,
                      direction: str = "reverse", style: str = "full") -> Example:
    chain = reason(history, target, attributes, sids, decay, direction)
    hist = ", ".join(sids.item_string(int(i)) for i in chain.history)
    prompt = chat_prompt(templates.REASONING[template].format(history=hist))
    example = (pick_group_example(examples, int(sids.codes[chain.anchor, 0]), chain.history + (chain.target,))
               if examples is not None and not group_as_token else None)
    text = chain_text(chain, items, attributes, sids, group_as_token, example, style)
    return Example("reasoning", prompt, chat_response(text), chain.history + (chain.target,))


def build_reasoning_examples(split, sids, items, attributes, count: int, max_history: int,
                             min_history: int, decay: float, rng: np.random.Generator,
                             group_as_token: bool = True, group_example: bool = False,
                             direction: str = "reverse", style: str = "full") -> list[Example]:
    """Targets at training positions >= min_history (the reference: 4 .. len-3 of the full sequence,
    i.e. never the validation or test item), history = up to max_history items before.
    group_example: step 4 names the group by an example item (`chain_text`); direction: `reason`;
    style: `chain_text`."""
    rows = training_targets(split.train, min_position=min_history)
    examples = group_examples(split.train, np.asarray(sids.codes)[:, 0]) if group_example else None
    out = []
    for u, p in sample_rows(rows, count, rng):
        seq = split.train[u]
        out.append(reasoning_example(seq[max(0, p - max_history):p], int(seq[p]), items, attributes,
                                     sids, decay, int(rng.integers(len(templates.REASONING))), group_as_token,
                                     examples, direction, style))
    return out
