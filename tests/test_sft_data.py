"""SFT data streams, bad input, checkpoint helper and config validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gream_jax import mesh as mesh_lib
from gream_jax.config_defaults import ConfigError, validate_config
from gream_jax.data.split import Split
from gream_jax.train.checkpoint import Checkpointer
from gream_jax.train.sft_data import EmptyTrainingSet, make_streams
from sft_toy import tiny_config, toy_world


def test_streams_pack_dense_windows_and_prompt_tasks():
    config = tiny_config()
    split, sids, items, tok = toy_world()
    streams = make_streams(config, split, sids, items, tok)
    b = streams.alignment.batch(0)
    assert b["tokens"].shape == (config.train.batch_size, config.train.seq_len)
    st = streams.stats["alignment"]
    assert st["dense_windows"] > 0 and st["prompt_examples"] > 0
    r = streams.reasoning.batch(0)
    assert r["tokens"].shape == (config.train.reasoning_batch_size, config.train.reasoning_seq_len)
    assert r["targets"].sum() > 0
    # same seed, same epoch -> same batches; the next epoch differs
    again = make_streams(config, split, sids, items, tok).alignment.batch(0)
    np.testing.assert_array_equal(b["tokens"], again["tokens"])


def test_empty_training_set_is_a_clear_error():
    config = tiny_config()
    config.tasks.examples = {k: 0 for k in config.tasks.examples}
    _, sids, items, tok = toy_world()
    split = Split(train=[np.array([1], np.int32)] * 4, valid_targets=np.zeros(4, np.int32),
                  test_targets=np.zeros(4, np.int32), max_history=6)
    streams = make_streams(config, split, sids, items, tok)
    with pytest.raises(EmptyTrainingSet, match="alignment stream is empty"):
        streams.alignment.batch(0)


def test_long_histories_are_truncated_from_the_left_and_counted():
    config = tiny_config(seq_len=40)         # 1 BOS + 13 items x 3 tokens: a 7-item window fits in 22
    config.data.max_history = 20
    config.tasks.examples = {k: 0 for k in config.tasks.examples}
    split, sids, items, tok = toy_world()
    streams = make_streams(config, split, sids, items, tok)
    b = streams.alignment.batch(0)
    assert streams.stats["alignment"]["truncated_prompts"] > 0
    assert streams.stats["alignment"]["dropped"] == 0
    assert (b["segment_ids"] > 0).sum(1).max() <= 40


def test_config_validation_names_the_field():
    config = tiny_config()
    config.train.grad_accum = 3
    with pytest.raises(ConfigError, match="config.train.batch_size"):
        validate_config(config)
    config = tiny_config()
    config.tasks.curriculum = "random"
    with pytest.raises(ConfigError, match="config.tasks.curriculum"):
        validate_config(config)
    config = tiny_config()
    config.tasks.examples = {"nope": 3}
    with pytest.raises(ConfigError, match="config.tasks.examples.nope"):
        validate_config(config)


def test_checkpointer_keeps_n_latest_and_the_best(tmp_path):
    mesh = mesh_lib.make_mesh({"data": -1}, jax.devices())
    sharding = mesh_lib.batch_sharding(mesh, 2)
    state = {"w": jax.device_put(jnp.arange(16.0).reshape(8, 2), sharding), "step": jnp.int32(0)}
    ck = Checkpointer(str(tmp_path), keep=2, async_save=True)
    for step in (1, 2, 3):
        ck.save(step, {"w": state["w"] * step, "step": jnp.int32(step)}, {"consumed": step})
        if step == 2:
            ck.save_best(step, {"w": state["w"] * step, "step": jnp.int32(step)}, {"consumed": step})
    ck.wait()
    assert ck.latest.all_steps() == [2, 3] and ck.best_step() == 2
    restored, meta = ck.restore(state)
    assert meta == {"consumed": 3}
    np.testing.assert_array_equal(restored["w"], np.arange(16.0).reshape(8, 2) * 3)
    assert restored["w"].sharding == sharding
    best, _ = ck.restore(state, best=True)
    np.testing.assert_array_equal(best["w"], np.arange(16.0).reshape(8, 2) * 2)
    ck.close()


def test_sft_split_holds_out_each_users_last_training_items():
    """config.train.holdout_last_targets: SFT's examples come from the training parts minus their
    last N items (one item always kept); validation/test, built from the full split, keep them."""
    from gream_jax.train.sft_stage import sft_split
    split = Split(train=[np.arange(5, dtype=np.int32), np.arange(2, dtype=np.int32), np.array([7], np.int32)],
                  valid_targets=np.array([8, 9, 10], np.int32), test_targets=np.array([11, 12, 13], np.int32),
                  max_history=6)
    held = sft_split(split, 2)
    assert [s.tolist() for s in held.train] == [[0, 1, 2], [0], [7]]
    assert held.valid_targets is split.valid_targets and held.max_history == 6
    np.testing.assert_array_equal(split.history("valid", 0), np.arange(5))       # the input is untouched
    assert sft_split(split, 0) is split
    # A real stream built from it has fewer dense windows.
    config = tiny_config()
    world_split, sids, items, tok = toy_world()
    full = make_streams(config, world_split, sids, items, tok)
    full.alignment.batch(0)
    fewer = make_streams(config, sft_split(world_split, 1), sids, items, tok)
    fewer.alignment.batch(0)
    assert fewer.stats["alignment"]["dense_windows"] <= full.stats["alignment"]["dense_windows"]
    assert fewer.stats["alignment"]["target_tokens"] < full.stats["alignment"]["target_tokens"]
    config.train.holdout_last_targets = -1
    with pytest.raises(ConfigError, match="config.train.holdout_last_targets=-1"):
        validate_config(config)


def test_streams_that_drop_many_examples_are_warned_about_naming_the_field():
    from gream_jax.train.sft_stage import dropped_examples_warnings
    train_cfg = {"seq_len": 128, "reasoning_seq_len": 512}
    stats = {"alignment": {"examples": 1000, "dropped": 3},                 # 0.3%: fine
             "reasoning": {"examples": 822, "dropped": 1178}}               # Industrial at 512: 59%
    (message,) = dropped_examples_warnings(stats, train_cfg)
    assert "1178 of 2000" in message and "59%" in message
    assert "config.train.reasoning_seq_len=512" in message
    assert dropped_examples_warnings({"alignment": {"examples": 90, "dropped": 10}}, train_cfg)[0].count(
        "config.train.seq_len=128") == 1
    assert dropped_examples_warnings({"alignment": {"examples": 10, "dropped": 0}, "reasoning": None},
                                     train_cfg) == []
