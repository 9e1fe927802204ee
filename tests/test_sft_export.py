"""The `export` stage: a saved SFT update restored into a fresh run's layout (gream_jax/train/sft_export.py)."""

import json

import jax
import numpy as np
import pytest

from sft_toy import tiny_config, tiny_inputs

from gream_jax import main
from gream_jax.config_defaults import ConfigError, validate_config

SCRIPT = [{"recall@5": .1, "recall@10": .2, "ndcg@5": .1, "ndcg@10": .1},
          {"recall@5": .1, "recall@10": .4, "ndcg@5": .1, "ndcg@10": .1},
          {"recall@5": .1, "recall@10": .3, "ndcg@5": .1, "ndcg@10": .1}]


def _leaves_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_any_kept_update_exports_its_validated_weights(tmp_path, monkeypatch):
    """Updates 2, 4, 6 kept; update 4 is the best (exported weights = the state `train` selected);
    each export is the EMA copy of that update, not the raw weights and not another update's."""
    from gream_jax.train import ema as ema_lib
    from gream_jax.train import sft_validation
    from gream_jax.train.checkpoint import Checkpointer
    from gream_jax.train.sft_export import restore_update, saved_updates
    from gream_jax.train.sft_stage import initial_state, train
    calls = []

    def scripted(self, params, split, which, users=None):
        calls.append(which)
        return dict(SCRIPT[min(len(calls), len(SCRIPT)) - 1])
    monkeypatch.setattr(sft_validation.DirectValidator, "evaluate", scripted)
    config = tiny_config(steps=6, eval_every=2, checkpoint_every=2, keep_checkpoints=3, ema_decay=0.5)
    stage = str(tmp_path / "sft")
    devices = jax.devices()[:1]
    summary, final_state, best_state, _ = train(config, stage, tiny_inputs(config, devices), evaluate_test=False)
    assert summary["best_step"] == 4
    assert saved_updates(stage) == {2: "checkpoints", 4: "checkpoints", 6: "checkpoints"}

    inputs = tiny_inputs(config, devices)
    exported = {}
    for step in (2, 4, 6):
        params, meta = restore_update(config, stage, inputs, step)
        exported[step] = params
        assert meta["alignment"]["consumed"] > 0
    assert _leaves_equal(exported[4], ema_lib.eval_params(best_state))
    assert _leaves_equal(exported[6], ema_lib.eval_params(final_state))
    assert not _leaves_equal(exported[6], final_state["params"])          # the EMA copy, not the raw weights
    assert not _leaves_equal(exported[2], exported[4])
    # The layout is a fresh run's: every leaf in the template's sharding.
    _, template = initial_state(config, inputs.params, inputs.mesh)
    for got, want in zip(jax.tree.leaves(exported[4]), jax.tree.leaves(ema_lib.eval_params(template))):
        assert got.sharding.is_equivalent_to(want.sharding, got.ndim) and got.shape == want.shape

    with pytest.raises(FileNotFoundError, match=r"no saved SFT update 3 .*saved: \[2, 4, 6\]"):
        restore_update(config, stage, inputs, 3)
    Checkpointer(stage).close()
    wider = tiny_config(steps=6, eval_every=2, checkpoint_every=2, keep_checkpoints=3, ema_decay=0.0)
    with pytest.raises(ValueError, match="does not match this config"):
        restore_update(wider, stage, tiny_inputs(wider, devices), 4)      # no EMA copy in this layout


def test_export_stage_is_wired_and_needs_a_step():
    from gream_jax.config_defaults import base_config
    assert main.stage_function("export").__name__ == "run_export"
    config = base_config()
    config.stage = "export"
    with pytest.raises(ConfigError, match="config.train.export_step=-1"):
        validate_config(config)
    config.train.export_step = 600
    validate_config(config)
