"""Rollout state machine with a scripted decoder, plus the host-side pool and dynamic sampling."""

import jax
import jax.numpy as jnp
import numpy as np

from gream_jax.index.trie import build_trie_from_codes
from gream_jax.train import srpo_batch
from gream_jax.train.srpo_rollouts import RolloutSpec, run_state_machine, sid_level_code_table

PAD, EOS, T_OPEN, T_CLOSE, A_OPEN, A_CLOSE, IM_END, WORD = 0, 1, 2, 3, 4, 5, 6, 7
V = 32
# level 0 codes 0..2 -> tokens 10..12, level 1 codes 0..2 -> tokens 20..22
TOKEN_TABLE = np.array([[10, 11, 12], [20, 21, 22]], np.int32)
CODES = np.array([[0, 0], [0, 1], [1, 2], [2, 0]], np.int32)
TRIE = build_trie_from_codes(CODES, np.full(4, 2)).to_device(TOKEN_TABLE)
LEVEL_CODE = jnp.asarray(sid_level_code_table(TOKEN_TABLE, V))


def _scripted(script):
    """A decoder whose next token is script[row, t] with overwhelming probability."""
    script = jnp.asarray(script, jnp.int32)

    def logits_at(t):
        tok = script[:, jnp.minimum(t, script.shape[1] - 1)]
        return jax.nn.one_hot(tok, V) * 200.0

    def step(params, tokens, cache):
        t = cache + 1
        return logits_at(t), t
    return step, logits_at(0), jnp.zeros((), jnp.int32)


def _spec(mode, constrained=True, think=6):
    return RolloutSpec(mode=mode, sid_max_len=2, sid_min_len=2, max_think_tokens=think,
                       constrained_answer=constrained, temperature=1.0, top_p=1.0, pad_id=PAD,
                       think_open=T_OPEN, think_close=T_CLOSE, answer_open=A_OPEN, answer_close=A_CLOSE,
                       end_ids=(EOS, IM_END))


def _run(spec, script, seed=0):
    step, first, cache = _scripted(script)
    out = run_state_machine(step, None, spec, TRIE, LEVEL_CODE, first, cache, jax.random.PRNGKey(seed))
    return {k: np.asarray(v) for k, v in out.items()}


def test_direct_rollouts_always_name_items():
    # The script asks for invalid continuations (e.g. 11 then 21: no item starts [1, 1]); the trie
    # overrides them, so every answer is some item's SID and its tokens spell those codes.
    script = np.array([[11, 21], [12, 22], [10, 20], [12, 22]] * 2)
    out = _run(_spec("direct"), script)
    assert out["well_formed"].all()
    assert {tuple(c) for c in out["codes"]} <= {tuple(c) for c in CODES}
    np.testing.assert_array_equal(out["codes"][0], [1, 2])       # [1, *] has the single child 2
    np.testing.assert_array_equal(out["tokens"], np.stack([TOKEN_TABLE[0][out["codes"][:, 0]],
                                                           TOKEN_TABLE[1][out["codes"][:, 1]]], 1))
    assert out["mask"].sum() == 16


def test_direct_follows_scripted_valid_sid():
    script = np.array([[10, 21], [12, 20]])           # items 1 ([0,1]) and 3 ([2,0])
    out = _run(_spec("direct"), script)
    np.testing.assert_array_equal(out["codes"], [[0, 1], [2, 0]])
    np.testing.assert_array_equal(out["tokens"], [[10, 21], [12, 20]])


def test_reasoning_constrained_phases():
    r = 6 + 2 + 1
    rows = [
        [T_OPEN, WORD, T_CLOSE, A_OPEN, 10, 21, PAD, PAD, PAD],    # well formed -> item [0, 1]
        [T_OPEN, A_OPEN, 12, 20, PAD, PAD, PAD, PAD, PAD],         # no </think> -> malformed
        [WORD, IM_END, PAD, PAD, PAD, PAD, PAD, PAD, PAD],         # ends the turn -> malformed
        [WORD] * 9,                                                # never answers -> malformed
    ]
    out = _run(_spec("reasoning"), np.array(rows))
    np.testing.assert_array_equal(out["well_formed"], [True, False, False, False])
    np.testing.assert_array_equal(out["codes"][0], [0, 1])
    assert (out["codes"][1:] == -1).all()
    np.testing.assert_array_equal(out["tokens"][0], [T_OPEN, WORD, T_CLOSE, A_OPEN, 10, 21, A_CLOSE, PAD, PAD])
    np.testing.assert_array_equal(out["mask"][0], [1] * 7 + [0] * 2)
    np.testing.assert_array_equal(out["mask"][2], [1, 1] + [0] * 7)
    assert out["mask"][3].sum() == 6                                # the think budget
    assert out["tokens"].shape == (4, r)


def test_reasoning_unconstrained_parsing():
    rows = [
        [T_OPEN, T_CLOSE, A_OPEN, 10, 21, A_CLOSE, PAD, PAD, PAD],  # parses to [0, 1]
        [T_OPEN, T_CLOSE, A_OPEN, 21, 10, A_CLOSE, PAD, PAD, PAD],  # levels out of order
        [T_OPEN, T_CLOSE, A_OPEN, 10, A_CLOSE, PAD, PAD, PAD, PAD], # too short
        [T_OPEN, T_CLOSE, A_OPEN, 10, 21, 22, A_CLOSE, PAD, PAD],   # too long
    ]
    out = _run(_spec("reasoning", constrained=False), np.array(rows))
    np.testing.assert_array_equal(out["well_formed"], [True, False, False, False])
    np.testing.assert_array_equal(out["codes"][0], [0, 1])
    np.testing.assert_array_equal(out["tokens"][0][:6], rows[0][:6])


def test_prompt_pool_uses_training_parts_only_and_resumes():
    train = [np.array([5, 6, 7]), np.array([8]), np.array([1, 2])]
    pool = srpo_batch.PromptPool(train, seed=3)
    assert len(pool) == 3                                          # (0,1), (0,2), (2,1)
    first = pool.draw(2)
    state = pool.get_state()
    rest = pool.draw(4)
    pool2 = srpo_batch.PromptPool(train, seed=3)
    pool2.set_state(state)
    np.testing.assert_array_equal(pool2.draw(4), rest)
    seen = {tuple(p) for p in np.concatenate([first, rest])}
    assert seen == {(0, 1), (0, 2), (2, 1)}
    hist, target = srpo_batch.history_and_target(train, (0, 2), max_history=1)
    np.testing.assert_array_equal(hist, [6])
    assert target == 7


def test_future_window_holds_the_next_training_items_and_their_discounts():
    train = [np.array([5, 6, 7, 9]), np.array([1, 2])]
    ids, weights = srpo_batch.future_window(train, (0, 1), window=3, discount=0.5)
    np.testing.assert_array_equal(ids, [6, 7, 9])
    np.testing.assert_allclose(weights, [1.0, 0.5, 0.25])
    ids, weights = srpo_batch.future_window(train, (0, 3), window=3, discount=0.5)  # the last training item
    np.testing.assert_array_equal(ids, [9, -1, -1])
    np.testing.assert_allclose(weights, [1.0, 0.0, 0.0])
    ids, weights = srpo_batch.future_window(train, (1, 1), window=1, discount=0.5)
    np.testing.assert_array_equal(ids, [2])
    np.testing.assert_allclose(weights, [1.0])


def test_prompt_pool_last_positions_keeps_each_users_latest_targets():
    train = [np.array([5, 6, 7, 9]), np.array([8]), np.array([1, 2])]
    pool = srpo_batch.PromptPool(train, seed=0, last_positions=2)
    assert {tuple(p) for p in pool.pairs} == {(0, 2), (0, 3), (2, 1)}   # never position 0 (no history)
    pool1 = srpo_batch.PromptPool(train, seed=0, last_positions=1)
    assert {tuple(p) for p in pool1.pairs} == {(0, 3), (2, 1)}
    assert len(srpo_batch.PromptPool(train, seed=0, last_positions=0)) == 4


def test_collect_groups_drops_zero_variance_and_refills():
    calls = []
    rng = np.random.default_rng(0)

    def draw(n):
        calls.append(n)
        rewards = rng.integers(0, 2, size=(n, 2)).astype(np.float32)
        rewards[0] = 1.0                                            # first group always uninformative
        return {"rewards": rewards, "prompt_ids": np.arange(n)}

    batch, stats = srpo_batch.collect_groups(draw, 6, True, max_rounds=10, oversample=2.0)
    assert batch["rewards"].shape == (6, 2)
    assert (batch["rewards"][:, 0] != batch["rewards"][:, 1]).all()
    assert stats["zero_variance_dropped"] >= len(calls)
    assert calls[0] == 6 and all(c >= 2 for c in calls[1:])
    np.testing.assert_array_equal(batch["group_weight"], 1.0)
    # Rounds exhausted: the batch is completed with weight-0 copies.
    never = lambda n: {"rewards": np.zeros((n, 2), np.float32), "prompt_ids": np.arange(n)}
    empty, st = srpo_batch.collect_groups(never, 4, True, max_rounds=2, oversample=1.0)
    assert empty == {} and st["rounds"] == 3 and st["zero_variance_share"] == 1.0

    def one_good(n):
        r = np.zeros((n, 2), np.float32)
        r[0, 0] = 1.0
        return {"rewards": r, "prompt_ids": np.arange(n)}
    part, st = srpo_batch.collect_groups(one_good, 4, True, max_rounds=1, oversample=1.0)
    np.testing.assert_array_equal(part["group_weight"], [1, 1, 0, 0])


def test_padded_chunks_fill_the_last_chunk_with_its_first_prompt():
    """Every chunk has one shape (left-padded to the bucketed width, each prompt repeated G times);
    the last chunk is completed with copies of its own first prompt."""
    from gream_jax import mesh as mesh_lib
    from gream_jax.infer.batching import prompt_width
    from gream_jax.train.srpo_rollouts import padded_chunks
    mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    sharding = mesh_lib.batch_sharding(mesh, 2, mesh_lib.DEFAULT_RULES)
    prompts = [[5, 6, 7], [8], [9, 10], [1], [11, 12, 13, 14, 15]]
    width = prompt_width(prompts, 4)
    assert width == 8
    chunks = [(np.asarray(t), np.asarray(m)) for t, m in padded_chunks(prompts, 4, width, 0, sharding, repeat=2)]
    assert len(chunks) == 2 and all(t.shape == m.shape == (8, 8) for t, m in chunks)
    tokens, mask = chunks[0]
    np.testing.assert_array_equal(tokens[0], [0, 0, 0, 0, 0, 5, 6, 7])
    np.testing.assert_array_equal(tokens[1], tokens[0])                  # repeated G = 2 times
    np.testing.assert_array_equal(mask[2], [0] * 7 + [1])
    last, _ = chunks[1]
    for row in range(8):                                                   # [11..15] then three copies of it
        np.testing.assert_array_equal(last[row], [0, 0, 0, 11, 12, 13, 14, 15])
