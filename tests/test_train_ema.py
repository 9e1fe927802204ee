"""EMA of the parameters: the pure update, the step wrapper, and the SFT loop that selects/exports it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gream_jax.train import ema
from sft_toy import tiny_config, tiny_inputs


def test_decay_starts_as_a_mean_and_caps_at_the_configured_value():
    d = np.asarray([float(ema.ema_decay(t, 0.99)) for t in (0, 1, 8, 10_000)])
    np.testing.assert_allclose(d[:3], [1 / 10, 2 / 11, 9 / 18], rtol=1e-6)
    assert d[3] == pytest.approx(0.99)


def test_update_mixes_float_leaves_and_passes_integer_leaves_through():
    e = {"w": jnp.ones((2,)), "n": jnp.asarray(3)}
    p = {"w": jnp.full((2,), 5.0), "n": jnp.asarray(7)}
    out = ema.ema_update(e, p, jnp.float32(0.75))
    np.testing.assert_allclose(out["w"], [2.0, 2.0])
    assert int(out["n"]) == 7


def test_with_ema_tracks_the_exponential_average_of_the_stepped_params():
    def step(state, batch):
        return {"params": {"w": state["params"]["w"] + batch}, "step": state["step"] + 1}, {"loss": 0.0}

    wrapped = jax.jit(ema.with_ema(step, 0.5))
    state = ema.add_ema({"params": {"w": jnp.zeros(())}, "step": jnp.int32(0)})
    expected = 0.0
    for t in range(5):
        state, metrics = wrapped(state, jnp.float32(1.0))
        d = min(0.5, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * (t + 1)
        assert float(metrics["ema_decay"]) == pytest.approx(d)
    assert float(state["params"]["w"]) == 5.0
    assert float(state["ema"]["w"]) == pytest.approx(expected, rel=1e-6)
    assert ema.eval_params(state) is state["ema"]
    assert ema.eval_params({"params": 1}) == 1


def test_sft_loop_with_ema_validates_and_returns_the_average(tmp_path):
    from gream_jax.train.sft_stage import train
    config = tiny_config(steps=6, ema_decay=0.9, eval_every=3, eval_raw=True)
    summary, state, best_state, _ = train(config, str(tmp_path / "sft"), tiny_inputs(config, jax.devices()[:1]),
                                          evaluate_test=False)
    assert summary["ema_decay"] == 0.9 and summary["steps"] == 6
    raw, avg = jax.device_get(state["params"]), jax.device_get(state["ema"])
    diffs = [float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(raw), jax.tree.leaves(avg))]
    assert max(diffs) > 0          # the EMA is not the raw weights
    assert "ema" in best_state     # the best checkpoint carries it, so export uses it
    rows = [line for line in open(tmp_path / "sft" / "metrics.jsonl")]
    assert any("valid_raw/recall@10" in r for r in rows)


def test_ema_decay_out_of_range_is_refused():
    from gream_jax.config_defaults import validate_config
    from gream_jax.config_defaults.base import ConfigError
    config = tiny_config(ema_decay=1.0)
    with pytest.raises(ConfigError, match="config.train.ema_decay"):
        validate_config(config)
