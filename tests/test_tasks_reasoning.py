"""Reasoning generator grounding, prompt builders, and the curriculum schedule."""

import numpy as np
import pytest

from gream_jax.tasks.attributes import all_item_attributes
from gream_jax.tasks.curriculum import is_reasoning_step, reasoning_probability, stream_plan
from gream_jax.tasks.example import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from gream_jax.tasks.prompts import direct_prompt_ids, reasoning_prompt_ids
from gream_jax.tasks.reasoning import build_reasoning_examples, chain_text, named_group, reason, related
from sft_toy import toy_world


def _is_subsequence(sub, seq):
    it = iter(seq)
    return all(any(x == y for y in it) for x in sub)


def test_chain_is_grounded_in_the_history():
    split, sids, items, _ = toy_world(n_users=30)
    attrs = all_item_attributes(items)
    checked = 0
    for u, seq in enumerate(split.train):
        for p in range(4, len(seq)):
            hist, target = seq[max(0, p - 20):p], int(seq[p])
            c = reason(hist, target, attrs, sids, 0.8)
            assert set(c.evidence) <= set(hist.tolist())
            for e in c.evidence:
                assert related(e, target, attrs, sids)
            assert _is_subsequence(c.rewrite, hist.tolist())
            assert set(c.intent_items) <= set(c.evidence)
            for a in c.intent_attributes:
                assert a in attrs[target]
            for a, w in c.preferences:
                assert any(a in attrs[int(i)] for i in hist) and w > 0
            assert c.anchor == target and c.anchor_attributes == tuple(attrs[target])
            checked += 1
    assert checked > 100


def test_chain_text_format():
    split, sids, items, _ = toy_world()
    attrs = all_item_attributes(items)
    seq = split.train[0]
    c = reason(seq[:6], int(seq[6]), attrs, sids, 0.8)
    text = chain_text(c, items, attrs, sids)
    assert text.startswith(THINK_OPEN) and text.count(THINK_CLOSE) == 1
    assert text.endswith(f"{ANSWER_OPEN}{sids.item_string(int(seq[6]))}{ANSWER_CLOSE}")
    think = text[:text.index(THINK_CLOSE)]
    for k in (1, 2, 3, 4):
        assert f"Step {k}" in think
    assert "Step 5" in text[text.index(THINK_CLOSE):]
    # the target is not named in the think block
    assert sids.item_string(int(seq[6])) not in think or int(seq[6]) in seq[:6]


def test_reasoning_targets_come_from_training_positions_from_four():
    split, sids, items, _ = toy_world(n_users=20)
    held = set(split.valid_targets.tolist()) | set(split.test_targets.tolist())
    exs = build_reasoning_examples(split, sids, items, all_item_attributes(items), -1, 20, 4, 0.8,
                                   np.random.default_rng(0))
    assert len(exs) == sum(max(len(s) - 4, 0) for s in split.train)
    for e in exs:
        assert not held & set(e.items)
        assert len(e.items) - 1 >= 4


def test_direct_prompt_is_prefix_of_dense_window():
    from gream_jax.tasks.dense import window_tokens
    from gream_jax.tasks.tokens import bos_id, item_token_ids
    import ml_collections
    split, sids, items, tok = toy_world()
    cfg = ml_collections.ConfigDict({"data": {"max_history": 20}, "tasks": {"direct_prompt": "dense"}})
    hist = split.train[0][:20]
    prompt = direct_prompt_ids(tok, sids, np.concatenate([[-1, -1], hist]), cfg)
    ids, _ = window_tokens(np.append(hist, 3), item_token_ids(tok, sids), bos_id(tok))
    assert prompt == ids[:len(prompt)] and len(ids) - len(prompt) == 3
    long = np.arange(25) % 26
    assert len(direct_prompt_ids(tok, sids, long, cfg)) == 1 + 20 * 3   # truncated from the left
    cfg.tasks.direct_prompt = "chat"
    chat = direct_prompt_ids(tok, sids, hist, cfg)
    assert chat[0] == tok.token_to_id("<|im_start|>")
    r = reasoning_prompt_ids(tok, sids, hist, cfg)
    from gream_jax.tasks.tokens import encode_text
    tail = encode_text(tok, "<|im_start|>assistant\n")
    assert r[-len(tail):] == tail and r[0] == tok.token_to_id("<|im_start|>")
    assert sum(t == tok.token_to_id(sids.item_tokens(int(hist[-1]))[-1]) for t in r) >= 1


def test_linear_ramp_matches_the_reference_formula():
    T, ratio = 300, 0.5
    # first part: p_insert = (i / N) * ratio * 1.5 -> per-step p / (1 + p)
    for step in (0, 50, 99):
        p = (step / 100) * ratio * 1.5
        assert reasoning_probability(step, T, ratio, "linear_ramp") == pytest.approx(p / (1 + p))
    assert reasoning_probability(150, T, ratio, "linear_ramp") == pytest.approx(0.375 / 1.375)
    assert reasoning_probability(250, T, ratio, "linear_ramp") == pytest.approx(ratio / (1 + ratio))
    assert reasoning_probability(10, T, 0.0, "linear_ramp") == 0.0


def test_other_schedules_and_determinism():
    assert reasoning_probability(5, 100, 0.25, "uniform_mix") == pytest.approx(0.2)
    plan = stream_plan(100, 0.25, "sequential", 0)
    assert not plan[:80].any() and plan[80:].all()
    a, b = stream_plan(3000, 0.25, "uniform_mix", 1), stream_plan(3000, 0.25, "uniform_mix", 1)
    assert (a == b).all() and abs(a.mean() - 0.2) < 0.03
    ramp = stream_plan(3000, 0.25, "linear_ramp", 0)
    assert ramp[:500].mean() < ramp[2000:].mean()
    assert is_reasoning_step(17, 3000, 0.25, "linear_ramp", 0) == ramp[17]
    with pytest.raises(ValueError, match="curriculum"):
        reasoning_probability(0, 10, 0.5, "bogus")


def test_chain_text_writes_the_group_as_a_number_for_trie_softmax_models():
    """A trie/level-softmax model can only continue an SID prefix with its trie children, so a
    chain for it must hold whole SIDs only: with group_as_token=False, removing every item's
    full SID string leaves no SID token in the text; the default keeps the lone group token."""
    import re
    split, sids, items, _ = toy_world()
    attrs = all_item_attributes(items)
    seq = split.train[0]
    c = reason(seq[:6], int(seq[6]), attrs, sids, 0.8)
    code = int(sids.codes[int(seq[6]), 0])

    def leftover(text):
        for i in sorted(range(len(items)), key=lambda i: -len(sids.item_string(i))):
            text = text.replace(sids.item_string(i), "")
        return re.findall(r"<[a-z]_\d+>", text)

    plain = chain_text(c, items, attrs, sids, group_as_token=False)
    assert leftover(plain) == [] and f"semantic group {code}." in plain
    assert leftover(chain_text(c, items, attrs, sids)) == [sids.token(0, code)]
    exs = build_reasoning_examples(split, sids, items, attrs, 5, 20, 4, 0.8, np.random.default_rng(0),
                                   group_as_token=False)
    assert all(leftover(e.response) == [] for e in exs)


def test_named_group_reads_step_4_back_in_both_forms():
    split, sids, items, _ = toy_world()
    attrs = all_item_attributes(items)
    seq = split.train[0]
    c = reason(seq[:6], int(seq[6]), attrs, sids, 0.8)
    code = int(sids.codes[int(seq[6]), 0])
    assert named_group(chain_text(c, items, attrs, sids, group_as_token=False)) == code
    assert named_group(chain_text(c, items, attrs, sids, group_as_token=True)) == code
    # A sampled chain whose step 4 lost the group, or that never reached step 4.
    assert named_group("<think>Step 1, ...\nStep 4, recommendation: an item that is by 30.</think>") is None
    assert named_group("<think>Step 1, behavioural evidence: ... semantic group 7") is None
    # Only step 4 counts, not a group mentioned in another step.
    assert named_group("Step 3, intent: the same semantic group\nStep 4, recommendation: from semantic group 12.") == 12


def test_chain_group_metrics_by_hand():
    from gream_jax.eval.chain_checks import chain_group_metrics
    first = np.array([0, 0, 1, 1, 2])                       # items 0..4, their first codes
    texts = ["Step 4, recommendation: an item from semantic group 1.",   # right group, answer in it
             "Step 4, recommendation: an item from semantic group 0.",   # wrong group, answer not in it
             "Step 4, recommendation: an item that is by 30.",          # names no group
             "Step 4, recommendation: an item from semantic group 2."]  # right group, answer not in it
    top = np.array([[2, 3, 0, -1], [4, 2, 0, 1], [0, 1, 2, 3], [0, 4, -1, -1]])
    targets = np.array([3, 2, 0, 4])                         # groups 1, 1, 0, 2
    m = chain_group_metrics(texts, top, targets, first, named_group)
    assert m["chain_names_group"] == 0.75
    assert m["chain_group_correct"] == pytest.approx(2 / 3)
    assert m["answer_in_chain_group"] == pytest.approx(1 / 3)
    # top-4 shares in the named group: user 0 [1, 1, 0, -] -> 2/4; user 1 [2, 1, 0, 0] -> 2/4; user 3 [0, 2] -> 1/4
    assert m["top4_in_chain_group"] == pytest.approx((0.5 + 0.5 + 0.25) / 3)
    assert m["chance_group_correct"] == pytest.approx((2 / 4) ** 2 + (1 / 4) ** 2 + (1 / 4) ** 2)
    with pytest.raises(ValueError, match="one per user"):
        chain_group_metrics(texts[:2], top, targets, first, named_group)
    from gream_jax.eval.chain_checks import chain_checks_markdown
    table = chain_checks_markdown({"valid": {"direct": {"recall@5": 0.1}, "reasoning": dict(m, answered_rate=0.5)},
                                   "test": {"direct": {"recall@5": 0.1}}})
    assert "| valid | 0.750 | 0.667 (0.375) | 0.333 | 0.417 | 0.500 |" in table and "| test |" not in table
    assert chain_checks_markdown({"test": {"direct": {"recall@5": 0.1}}}) == ""


def test_group_example_names_the_group_by_a_frequent_item_never_the_target_or_history():
    """config.tasks.reasoning_group_example: step 4 writes a whole SID (so a trie-softmax model can
    write it), of the target's group, the group's most frequent training item outside the target
    and history; `named_group` reads the group back."""
    from gream_jax.tasks.reasoning import group_examples, pick_group_example
    split, sids, items, _ = toy_world(n_users=30)
    attrs = all_item_attributes(items)
    first = np.asarray(sids.codes)[:, 0]
    examples = group_examples(split.train, first)
    counts = np.bincount(np.concatenate(split.train), minlength=len(first))
    for g, members in examples.items():
        assert all(first[i] == g for i in members) and sorted(members) == sorted(np.flatnonzero(first == g))
        assert all(counts[a] >= counts[b] for a, b in zip(members, members[1:]))
    g = int(first[0])
    assert pick_group_example(examples, g, []) == examples[g][0]
    assert pick_group_example(examples, g, examples[g][:1]) == (examples[g][1] if len(examples[g]) > 1 else None)
    assert pick_group_example(examples, g, examples[g]) is None
    exs = build_reasoning_examples(split, sids, items, attrs, 40, 20, 4, 0.8, np.random.default_rng(0),
                                   group_as_token=False, group_example=True)
    named = 0
    for e in exs:
        target, history = e.items[-1], e.items[:-1]
        step4 = e.response[e.response.index("Step 4"):e.response.index(THINK_CLOSE)]
        assert named_group(e.response) == first[target]
        shown = [i for i in range(len(items)) if sids.item_string(i) in step4]
        if "semantic group of" in step4:
            named += 1
            assert len(shown) == 1 and first[shown[0]] == first[target]
            assert shown[0] != target and shown[0] not in history
    assert named > 30
    # A vocabulary-softmax model keeps its lone group token; the switch is refused for it.
    from gream_jax.config_defaults import base_config
    from gream_jax.config_defaults.base import ConfigError, validate_config
    config = base_config()
    config.model.sid_softmax, config.tasks.reasoning_group_example = "vocab", True
    with pytest.raises(ConfigError, match="reasoning_group_example"):
        validate_config(config)


def test_forward_chains_are_a_function_of_the_history_alone():
    """config.tasks.reasoning_direction="forward": stages 1-5 are written around the latest history
    item, so two targets after the same history get the same chain and differ only in the answer;
    "reverse" (GREAM) chains differ with the target they rationalise."""
    split, sids, items, _ = toy_world(n_users=30)
    attrs = all_item_attributes(items)
    think_differs = {"forward": 0, "reverse": 0}
    pairs = 0
    for seq in split.train:
        for p in range(4, len(seq) - 1):
            hist = seq[max(0, p - 20):p]
            t1, t2 = int(seq[p]), int(seq[p + 1])
            if t1 == t2:
                continue
            pairs += 1
            for direction in ("forward", "reverse"):
                c1, c2 = (reason(hist, t, attrs, sids, 0.8, direction) for t in (t1, t2))
                x1, x2 = (chain_text(c, items, attrs, sids, group_as_token=False) for c in (c1, c2))
                think1, think2 = (x.split(ANSWER_OPEN)[0] for x in (x1, x2))
                assert x1.endswith(f"{ANSWER_OPEN}{sids.item_string(t1)}{ANSWER_CLOSE}")
                think_differs[direction] += think1 != think2
                if direction == "forward":
                    assert c1.anchor == int(hist[-1]) and c1.target == t1
                    assert all(related(e, int(hist[-1]), attrs, sids) for e in c1.evidence)
                    assert named_group(x1) == int(sids.codes[int(hist[-1]), 0])
    assert pairs > 100
    assert think_differs["forward"] == 0
    assert think_differs["reverse"] > pairs // 2
    with pytest.raises(ValueError, match="direction"):
        reason(hist, t1, attrs, sids, 0.8, "sideways")
    from gream_jax.config_defaults import base_config
    from gream_jax.config_defaults.base import ConfigError, validate_config
    config = base_config()
    config.tasks.reasoning_direction = "sideways"
    with pytest.raises(ConfigError, match="reasoning_direction"):
        validate_config(config)


def test_compact_chains_keep_the_stages_in_a_third_of_the_text():
    """config.tasks.reasoning_style="compact": the same five stages and answer, Step 4 readable by
    `named_group`, no titles, at most five rewrite items, and much shorter than the full style."""
    from gream_jax.tasks.reasoning import COMPACT_REWRITE_ITEMS
    split, sids, items, _ = toy_world(n_users=30)
    attrs = all_item_attributes(items)
    ratios = []
    for seq in split.train:
        for p in range(4, len(seq)):
            hist, target = seq[max(0, p - 20):p], int(seq[p])
            c = reason(hist, target, attrs, sids, 0.8)
            full = chain_text(c, items, attrs, sids, group_as_token=False)
            compact = chain_text(c, items, attrs, sids, group_as_token=False, style="compact")
            assert compact.startswith(THINK_OPEN) and THINK_CLOSE in compact
            assert compact.endswith(f"{ANSWER_OPEN}{sids.item_string(target)}{ANSWER_CLOSE}")
            for k in range(1, 6):
                assert f"Step {k}," in compact
            assert named_group(compact) == named_group(full) == int(sids.codes[target, 0])
            assert ('("' in full) == bool(c.evidence) and '("' not in compact    # full quotes titles
            rewrite = compact.split("Step 5, denoised history: ")[1].split("\n")[0]
            assert rewrite == " ".join(sids.item_string(i) for i in c.rewrite[-COMPACT_REWRITE_ITEMS:])
            ratios.append(len(compact) / len(full))
    assert len(ratios) > 100 and np.mean(ratios) < 0.6
    with pytest.raises(ValueError, match="style"):
        chain_text(c, items, attrs, sids, style="terse")
    from gream_jax.config_defaults import base_config
    from gream_jax.config_defaults.base import ConfigError, validate_config
    config = base_config()
    config.tasks.reasoning_style = "terse"
    with pytest.raises(ConfigError, match="reasoning_style"):
        validate_config(config)
