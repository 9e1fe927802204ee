"""SRPO token loss against hand-computed values, and one jitted update on the 8-device mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infer_toy import tiny_policy
from gream_jax import mesh as mesh_lib
from gream_jax.model import api as model_api
from gream_jax.train import srpo


def test_token_loss_clip_dual_clip_and_kl():
    cfg = srpo.LossConfig(clip_eps_low=0.2, clip_eps_high=0.2, dual_clip=3.0, kl_coef=0.0)
    old = jnp.zeros((4, 1))
    logp = jnp.log(jnp.array([[1.5], [0.5], [1.1], [10.0]]))      # ratios 1.5, 0.5, 1.1, 10
    adv = jnp.array([1.0, 1.0, -1.0, -1.0])
    loss, clipped, _ = srpo.token_loss(logp, old, old, adv, cfg)
    # A>0, ratio 1.5: min(1.5, 1.2) -> loss -1.2 (clipped); A>0, ratio 0.5: loss -0.5 (not clipped)
    # A<0, ratio 1.1: max(1.1, 1.1) -> 1.1; A<0, ratio 10: max(10, 1.2) = 10, dual clip -> 3.
    np.testing.assert_allclose(np.asarray(loss[:, 0]), [-1.2, -0.5, 1.1, 3.0], rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(clipped[:, 0]), [True, False, False, True])
    cfg_kl = srpo.LossConfig(kl_coef=1.0)
    ref = jnp.log(jnp.array([[0.5]]))
    lp = jnp.log(jnp.array([[0.25]]))
    _, _, kl = srpo.token_loss(lp, lp, ref, jnp.zeros((1,)), cfg_kl)
    d = np.log(0.5) - np.log(0.25)
    np.testing.assert_allclose(float(kl[0, 0]), np.exp(d) - d - 1, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny():
    return tiny_policy(num_layers=1, seed=0)


def test_update_changes_policy_not_reference(tiny):
    mesh, cfg, params = tiny
    rules = mesh_lib.DEFAULT_RULES
    shardings = model_api.param_shardings(cfg, mesh)
    ref_params = jax.tree.map(lambda x: x.copy(), params)
    ref_before = jax.tree.map(np.asarray, ref_params)
    n_micro, micro, lp, r = 2, 8, 5, 3
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 64, size=(n_micro, micro, lp + r)).astype(np.int32)
    attn = np.ones_like(tokens)
    attn[:, :, :2] = 0                                  # left padding
    resp_mask = np.ones((n_micro, micro, r), np.float32)
    resp_mask[:, :, -1] = 0                             # one padded response token
    adv = rng.normal(size=(n_micro, micro)).astype(np.float32)
    logprob_fn = srpo.make_logprob_fn(cfg, mesh, rules, r)
    with jax.set_mesh(mesh):
        old = logprob_fn(params, tokens, attn)
        ref = logprob_fn(ref_params, tokens, attn)
    assert old.shape == (n_micro, micro, r) and np.all(np.asarray(old) <= 0)
    np.testing.assert_allclose(np.asarray(old), np.asarray(ref))
    opt = srpo.OptimizerConfig(learning_rate=1e-2, warmup_steps=0, weight_decay=0.1, grad_clip=1.0)
    opt_state = srpo.init_optimizer_state(cfg, opt, params, mesh, rules)
    update = srpo.make_update_fn(cfg, opt, srpo.LossConfig(), mesh, rules, r)
    batch = dict(tokens=tokens, attention_mask=attn, response_mask=resp_mask, old_logp=np.asarray(old),
                 ref_logp=np.asarray(ref), advantages=adv)
    before = jax.tree.map(np.asarray, params)
    with jax.set_mesh(mesh):
        new_params, opt_state, metrics = update(jax.tree.map(lambda x: x.copy(), params), opt_state, batch)
    assert np.isfinite(float(metrics["loss"]))
    # First inner step: ratio == 1 exactly, nothing clipped, KL to the (identical) reference is 0.
    assert float(metrics["clip_frac"]) == 0.0 and abs(float(metrics["kl"])) < 1e-6
    assert float(metrics["tokens"]) == n_micro * micro * (r - 1)
    changed = jax.tree.map(lambda a, b: not np.allclose(a, np.asarray(b)), before, new_params)
    assert any(jax.tree.leaves(changed))
    for a, b in zip(jax.tree.leaves(ref_before), jax.tree.leaves(ref_params)):
        np.testing.assert_array_equal(a, np.asarray(b))
    # Raising the advantage-weighted log-likelihood: tokens with A > 0 gain probability.
    with jax.set_mesh(mesh):
        new_logp = np.asarray(logprob_fn(new_params, tokens, attn))
    gain = ((new_logp - np.asarray(old)) * resp_mask).sum(-1)
    assert np.corrcoef(gain.reshape(-1), adv.reshape(-1))[0, 1] > 0.5
    leaf = jax.tree.leaves(new_params)[0]
    assert leaf.sharding == jax.tree.leaves(shardings)[0]


def test_response_logprobs_match_full_forward(tiny):
    mesh, cfg, params = tiny
    tokens = np.random.default_rng(1).integers(1, 64, size=(8, 7)).astype(np.int32)
    mask = np.ones_like(tokens)
    mask[:, :2] = 0
    logp, entropy = srpo.response_logprobs(params, cfg, tokens, mask, 3)
    full = jax.nn.log_softmax(model_api.forward(params, cfg, tokens, mask), axis=-1)
    expect = np.take_along_axis(np.asarray(full[:, 3:6]), tokens[:, 4:7, None], axis=-1)[..., 0]
    np.testing.assert_allclose(np.asarray(logp), expect, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(entropy) > 0)


def test_policy_item_head_adds_w_log_q_at_the_item_token(tiny):
    """config.rl.policy_item_head: the token that names an item scores log p + w log q(item), q the
    head's softmax over the item tokens at the prompt's end; every other token is unchanged; the
    jitted log-prob function (with the head tables as its extra argument) agrees."""
    mesh, cfg, params = tiny
    rng = np.random.default_rng(2)
    item_tokens = np.arange(40, 52, dtype=np.int32)                 # 12 items, tokens 40..51
    item_of_token = np.full(64, -1, np.int32)
    item_of_token[item_tokens] = np.arange(12)
    tokens = rng.integers(1, 30, size=(8, 7)).astype(np.int32)    # prompt 4 + response 3
    items = rng.integers(0, 12, size=8)
    tokens[:, -1] = item_tokens[items]                             # response = (code, code, item token)
    tokens[0, -1] = 5                                              # a row whose response names no item
    mask = np.ones_like(tokens)
    head = {"item_tokens": jnp.asarray(item_tokens), "item_of_token": jnp.asarray(item_of_token)}
    plain, _ = srpo.response_logprobs(params, cfg, tokens, mask, 3)
    fused, _ = srpo.response_logprobs(params, cfg, tokens, mask, 3, None, head, 2.0)
    logits = np.asarray(model_api.forward(params, cfg, tokens, mask))[:, 3]        # predicts the 1st response token
    logq = np.asarray(jax.nn.log_softmax(jnp.asarray(logits[:, item_tokens]), -1))
    expect = np.asarray(plain).copy()
    expect[1:, 2] += 2.0 * logq[np.arange(1, 8), items[1:]]
    np.testing.assert_allclose(np.asarray(fused), expect, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(fused)[:, :2] == np.asarray(plain)[:, :2])
    fn = srpo.make_logprob_fn(cfg, mesh, mesh_lib.DEFAULT_RULES, 3, False, 2.0)
    out = fn(params, tokens[None], mask[None], head)
    np.testing.assert_allclose(np.asarray(out[0]), expect, rtol=1e-5, atol=1e-5)


def test_token_advantages_equal_to_sequence_ones_give_the_same_update(tiny):
    """`[.., R]` advantages that repeat one value per sequence reproduce the `[..]` update."""
    mesh, cfg, params = tiny
    rules = mesh_lib.DEFAULT_RULES
    n_micro, micro, lp, r = 1, 8, 4, 3
    rng = np.random.default_rng(3)
    tokens = rng.integers(1, 64, size=(n_micro, micro, lp + r)).astype(np.int32)
    attn = np.ones_like(tokens)
    resp_mask = np.ones((n_micro, micro, r), np.float32)
    adv = rng.normal(size=(n_micro, micro)).astype(np.float32)
    logprob_fn = srpo.make_logprob_fn(cfg, mesh, rules, r)
    with jax.set_mesh(mesh):
        old = np.asarray(logprob_fn(params, tokens, attn))
    opt = srpo.OptimizerConfig(learning_rate=1e-2, warmup_steps=0)
    out = []
    for token_adv in (False, True):
        a = np.repeat(adv[..., None], r, -1) if token_adv else adv
        update = srpo.make_update_fn(cfg, opt, srpo.LossConfig(), mesh, rules, r, False, token_adv)
        state = srpo.init_optimizer_state(cfg, opt, params, mesh, rules)
        batch = dict(tokens=tokens, attention_mask=attn, response_mask=resp_mask, old_logp=old,
                     ref_logp=old, advantages=a)
        with jax.set_mesh(mesh):
            new, _, _ = update(jax.tree.map(lambda x: x.copy(), params), state, batch)
        out.append(jax.tree.map(np.asarray, new))
    for a, b in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
