"""Alignment tasks: formatting, template variety, determinism, and no valid/test leakage."""

import numpy as np
import pytest

from gream_jax.tasks import templates
from gream_jax.tasks.alignment import AlignmentBuilder, build_alignment_examples, training_targets
from gream_jax.tasks.attributes import all_item_attributes, item_attributes
from gream_jax.tasks.dense import dense_windows, window_ends, window_tokens
from gream_jax.tasks.example import IM_END, IM_START
from gream_jax.tasks.tokens import SidTokenMismatch, encode_text, item_token_ids
from sft_toy import ToyTokenizer, toy_world

ALL_COUNTS = {"seqrec": -1, "item2index": -1, "index2item": -1, "fusionseqrec": -1, "itemsearch": -1,
              "preferenceobtain": -1}


def _builder(split, sids, items):
    return AlignmentBuilder(split, sids, items, all_item_attributes(items), 20, 0.8)


def test_every_task_is_chat_formatted_and_uses_several_templates():
    split, sids, items, _ = toy_world()
    exs = build_alignment_examples(_builder(split, sids, items), ALL_COUNTS, np.random.default_rng(0))
    tasks = {e.task for e in exs}
    assert tasks == set(ALL_COUNTS)
    for e in exs:
        assert e.prompt.startswith(f"{IM_START}user\n") and e.prompt.endswith(f"{IM_START}assistant\n")
        assert e.response.endswith(IM_END) and IM_START not in e.response
    seqrec_prompts = [e.prompt for e in exs if e.task == "seqrec"]
    used = {i for p in seqrec_prompts for i, t in enumerate(templates.SEQREC)
            if t.split("{history}")[0] in p}
    assert len(used) >= 4, used


def test_seqrec_answer_is_next_training_item_sid():
    split, sids, items, _ = toy_world()
    b = _builder(split, sids, items)
    ex = b.seqrec(np.array([[3, 5]]), np.random.default_rng(0))[0]
    target = int(split.train[3][5])
    assert ex.response.startswith(sids.item_string(target))
    for item in split.train[3][:5]:
        assert sids.item_string(int(item)) in ex.prompt
    assert sids.item_string(int(split.train[3][6])) not in ex.prompt or split.train[3][6] in split.train[3][:6]


def test_examples_are_deterministic_for_a_seed_and_change_with_it():
    split, sids, items, _ = toy_world()
    a = build_alignment_examples(_builder(split, sids, items), ALL_COUNTS, np.random.default_rng(7))
    b = build_alignment_examples(_builder(split, sids, items), ALL_COUNTS, np.random.default_rng(7))
    c = build_alignment_examples(_builder(split, sids, items), ALL_COUNTS, np.random.default_rng(8))
    assert a == b and a != c


def test_no_valid_or_test_target_leaks_into_interaction_tasks():
    split, sids, items, _ = toy_world(n_users=20)
    held = set(split.valid_targets.tolist()) | set(split.test_targets.tolist())
    exs = build_alignment_examples(_builder(split, sids, items), ALL_COUNTS, np.random.default_rng(0))
    interaction = [e for e in exs if e.task not in ("item2index", "index2item")]
    assert interaction
    for e in interaction:
        assert not held & set(e.items), (e.task, e.items)
        for h in held:
            assert sids.item_string(h) not in e.prompt + e.response
    for _, w in dense_windows(split.train, 21, 0, np.random.default_rng(0)):
        assert not held & set(w.tolist())


def test_training_targets_cover_positions_from_one():
    split, *_ = toy_world()
    rows = training_targets(split.train)
    assert len(rows) == sum(len(s) - 1 for s in split.train)
    assert rows[:, 1].min() == 1


def test_dense_windows_cover_latest_items_and_mask_first_item():
    assert window_ends(50, 21, 10, 3) == [50, 47, 37, 27, 21]
    assert window_ends(5, 21, 10, 0) == [5]
    assert window_ends(1, 21, 10, 0) == []
    split, sids, items, tok = toy_world()
    table = item_token_ids(tok, sids)
    ids, mask = window_tokens(np.array([4, 9, 2]), table, bos=7)
    assert ids[0] == 7 and len(ids) == 1 + 3 * 3
    assert mask == [0, 0, 0, 0] + [1] * 6
    assert ids[4:7] == [tok.token_to_id(t) for t in sids.item_tokens(9)]


def test_sid_text_is_encoded_with_the_sid_tokens():
    split, sids, items, tok = toy_world()
    ids = encode_text(tok, f"next: {sids.item_string(5)}")
    assert ids[-3:] == [tok.token_to_id(t) for t in sids.item_tokens(5)]


def test_sid_artifact_not_matching_tokenizer_is_refused():
    split, sids, items, _ = toy_world()
    tok = ToyTokenizer(["a"], sids.all_tokens()[:-3])
    with pytest.raises(SidTokenMismatch, match="not in its vocabulary"):
        item_token_ids(tok, sids)


def test_item_attributes_read_genres_and_decade():
    split, sids, items, _ = toy_world()
    attrs = item_attributes(items[4])
    assert "1980s" in attrs
    for g in items[4].categories.split(", "):
        assert g in attrs
