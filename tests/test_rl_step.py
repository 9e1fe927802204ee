"""A tiny end-to-end SRPO step on the 8-device mesh: rollouts, dynamic sampling, update."""

import dataclasses

import jax
import numpy as np
import pytest

from gream_jax import mesh as mesh_lib
from gream_jax.config_defaults import base_config
from gream_jax.data.split import Split
from gream_jax.model import api as model_api
from gream_jax.model.config import ModelConfig
from gream_jax.model.tokenizer import round_up, train_small_tokenizer
from gream_jax.tasks.example import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from gream_jax.train.srpo_trainer import SrpoTrainer, reward_table


@dataclasses.dataclass
class TinySids:
    """The SemanticIds contract (docs/DESIGN.md) on a handful of items: 2 levels x 3 codes."""
    codes: np.ndarray
    lengths: np.ndarray
    level_sizes: tuple

    def token(self, level, code):
        return f"<{'abcde'[level]}_{code}>"

    def item_tokens(self, item):
        return [self.token(l, int(self.codes[item, l])) for l in range(int(self.lengths[item]))]

    def item_string(self, item):
        return "".join(self.item_tokens(item))


@pytest.fixture(scope="module")
def setup():
    codes = np.array([[a, b] for a in range(3) for b in range(3)], np.int32)       # 9 items
    sids = TinySids(codes, np.full(9, 2, np.int32), (3, 3))
    tok = train_small_tokenizer(["user history item recommend think answer"] * 4, vocab_size=300)
    tok.add_tokens([sids.token(l, c) for l in range(2) for c in range(3)]
                   + [THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE])
    cfg = ModelConfig(vocab_size=round_up(tok.vocab_size, 8), hidden_size=32, intermediate_size=64,
                      num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16, max_position_embeddings=256)
    mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    rng = np.random.default_rng(0)
    split = Split([rng.integers(0, 9, size=6).astype(np.int32) for _ in range(12)],
                  np.zeros(12, np.int32), np.zeros(12, np.int32), max_history=4)
    config = base_config()
    config.data.max_history = 4
    config.tasks.direct_prompt = "dense"
    rl = config.rl
    rl.mode, rl.group_size, rl.batch_prompts, rl.mini_batch_prompts = "direct", 4, 8, 4
    rl.micro_batch_sequences, rl.rollout_chunk_prompts, rl.ppo_epochs = 8, 8, 2
    rl.learning_rate, rl.warmup_steps, rl.max_think_tokens = 1e-2, 0, 6
    return config, cfg, tok, sids, split, mesh


def _trainer(setup, **overrides):
    config, cfg, tok, sids, split, mesh = setup
    config = config.copy_and_resolve_references()
    for k, v in overrides.items():
        config.rl[k] = v
    params = model_api.init_params(cfg, jax.random.PRNGKey(1), mesh)
    return SrpoTrainer(config, cfg, params, tok, sids, split, mesh, mesh_lib.DEFAULT_RULES)


def _capture_update_inputs(monkeypatch, layout: str) -> dict:
    """Wraps the trainer's update-batch layout so a test sees the batch and advantages it gets."""
    import gream_jax.train.srpo_trainer as stage
    captured = {}
    real = getattr(stage, layout)

    def spy(batch, adv, *args, **kwargs):
        captured.update(batch=batch, adv=adv)
        return real(batch, adv, *args, **kwargs)

    monkeypatch.setattr(stage, layout, spy)
    return captured


def test_direct_srpo_step_updates_policy_only(setup):
    trainer = _trainer(setup)
    before = jax.tree.map(np.asarray, trainer.params)
    ref_before = jax.tree.map(np.asarray, trainer.ref_params)
    seen = []
    draw = trainer._draw
    trainer._draw = lambda n, s: seen.append(draw(n, s)) or seen[-1]
    m = trainer.train_step()
    assert m["skipped"] == 0.0 and np.isfinite(m["loss"])
    assert m["well_formed_rate"] == 1.0                         # the trie makes every answer an item
    assert m["groups_kept"] == 8 and m["updates"] == 2 * 2      # 2 inner epochs x 2 mini-batches
    assert 0.0 <= m["clip_frac"] <= 1.0 and m["entropy"] > 0 and m["rollout_tokens_per_s"] > 0
    drawn = np.concatenate([s["rewards"] for s in seen])
    zero_var = np.all(drawn == drawn[:, :1], axis=1)
    assert m["zero_variance_share"] == pytest.approx(zero_var.mean())
    assert m["prompts_drawn"] == len(drawn) >= 8
    changed = [not np.allclose(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(before),
                                                                jax.tree.leaves(trainer.params))]
    assert any(changed)
    for a, b in zip(jax.tree.leaves(ref_before), jax.tree.leaves(trainer.ref_params)):
        np.testing.assert_array_equal(a, np.asarray(b))
    # Rewards of a 2-level SID: 0, sqrt(1/2) for the first code, 1 for the item.
    allowed = np.array([0.0, np.sqrt(0.5), 1.0])
    assert np.all(np.min(np.abs(drawn.reshape(-1, 1) - allowed), axis=1) < 1e-5)
    np.testing.assert_allclose(reward_table(setup[0], setup[3]), [0.0, 0.70710677, 0.95], rtol=1e-6)


def test_reasoning_step_without_answers_is_skipped(setup):
    # A random model almost never writes `<answer>` in 6 tokens: every rollout is malformed
    # (reward 0), so every group has zero variance and the step is skipped, not trained on NaNs.
    trainer = _trainer(setup, mode="reasoning", max_resample_rounds=1)
    before = jax.tree.map(np.asarray, trainer.params)
    m = trainer.train_step()
    assert m["well_formed_rate"] < 0.05
    if m["skipped"]:
        assert m["zero_variance_share"] == 1.0
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(trainer.params)):
            np.testing.assert_array_equal(a, np.asarray(b))
    else:
        assert np.isfinite(m["loss"])


@pytest.mark.parametrize("shared_prefix", ["on", "off"])
def test_direct_step_with_level_credit(setup, monkeypatch, shared_prefix):
    """Per-SID-token credit: the advantages handed to the update are `[P, G, L]` reward-to-go
    z-scores (checked against `level_advantage` on the same rollouts), and the step trains, in
    either update layout."""
    from gream_jax.train import advantages as adv_lib
    from gream_jax.train import rewards as rw
    trainer = _trainer(setup, credit_assignment="level", shared_prefix=shared_prefix)
    assert trainer.token_credit
    captured = _capture_update_inputs(monkeypatch, "shared_prefix_batches" if shared_prefix == "on"
                                      else "update_batches")
    before = jax.tree.map(np.asarray, trainer.params)
    m = trainer.train_step()
    batch, adv = captured["batch"], captured["adv"]
    p, g = batch["rewards"].shape
    assert adv.shape == (p, g, 2) == batch["response_tokens"].shape
    matches = rw.leading_matches(batch["codes"], batch["target_codes"])
    want = adv_lib.level_advantage(batch["rewards"], matches, batch["hits"], trainer.credit, 4, True)
    np.testing.assert_allclose(adv, np.asarray(want), rtol=1e-6)
    # Token 0 (the first code) carries the whole reward, token 1 (the item) only the exact hits:
    # with no hit in a group its item-token advantages are all 0.
    no_hit = ~np.asarray(batch["hits"]).any(-1)
    assert np.all(adv[no_hit][..., 1] == 0.0)
    assert m["skipped"] == 0.0 and np.isfinite(m["loss"])
    assert any(not np.allclose(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(before),
                                                                jax.tree.leaves(trainer.params)))


def test_shared_prefix_step_equals_a_row_per_response_step(setup):
    """config.rl.shared_prefix: "auto" packs Direct-mode groups (a row per group), and a whole
    step (same rollouts from the same seed, 2 epochs x 2 mini-batches) leaves the parameters
    where the row-per-response layout leaves them."""
    on, off = _trainer(setup), _trainer(setup, shared_prefix="off")
    assert on.group_rows == 4 and off.group_rows == 0
    m_on, m_off = on.train_step(), off.train_step()
    assert m_on["reward_mean"] == m_off["reward_mean"] and m_on["updates"] == m_off["updates"] == 4
    np.testing.assert_allclose(m_on["loss"], m_off["loss"], rtol=1e-3, atol=1e-6)
    for a, b in zip(jax.tree.leaves(on.params), jax.tree.leaves(off.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-5)


def test_target_popularity_power_reweights_each_groups_advantages(setup, monkeypatch):
    """config.rl.target_popularity_power: the advantages handed to the update are the objective's
    times (target training count) ** -power, normalised to mean 1 over the live groups."""
    from gream_jax.train import advantages as adv_lib
    captured = _capture_update_inputs(monkeypatch, "shared_prefix_batches")
    trainer = _trainer(setup, target_popularity_power=1.0)
    m = trainer.train_step()
    assert m["skipped"] == 0.0 and np.isfinite(m["loss"])
    batch, adv = captured["batch"], captured["adv"]
    counts = trainer.split.item_counts(9)
    targets = [np.flatnonzero((trainer.sids.codes == t).all(1))[0] for t in batch["target_codes"]]
    np.testing.assert_array_equal(batch["target_counts"], counts[targets])
    plain = np.asarray(adv_lib.srpo_advantage(batch["rewards"], batch["hits"], 4, True))
    w = 1.0 / counts[targets]
    live = batch["group_weight"] > 0
    np.testing.assert_allclose(adv, plain * (w / w[live].mean())[:, None], rtol=1e-5, atol=1e-6)

