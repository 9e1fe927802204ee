"""The `rl` stage on a tiny synthetic workdir: runs, logs, exports rl/final, and resumes."""

import json
import os

import jax
import numpy as np
import pytest

from gream_jax.config_defaults import base_config, validate_config
from gream_jax.data import prepare
from gream_jax.data.types import InteractionData, ItemText
from gream_jax.index.sid import SemanticIds
from gream_jax.model import api as model_api
from gream_jax.model.config import ModelConfig
from gream_jax.model.store import load_model, save_model
from gream_jax.model.tokenizer import TASK_TOKENS, round_up, train_small_tokenizer
from gream_jax import mesh as mesh_lib

N_USERS, N_ITEMS = 16, 12


def _write_workdir(workdir, monkeypatch, config):
    rng = np.random.default_rng(0)
    data = InteractionData(
        name="ml100k", item_ids=[str(i + 1) for i in range(N_ITEMS)], user_ids=[str(u + 1) for u in range(N_USERS)],
        items=[ItemText(title=f"movie {i}", brand="", categories="drama", description="", reviews=[])
               for i in range(N_ITEMS)],
        sequences=[rng.integers(0, N_ITEMS, size=8).astype(np.int32) for _ in range(N_USERS)])
    monkeypatch.setattr(prepare, "load_dataset", lambda cfg: data)
    prepare.run_prepare(config, workdir)
    codes = np.stack([np.arange(N_ITEMS) % 3, np.arange(N_ITEMS)], 1).astype(np.int32)   # 1 level + item
    sids = SemanticIds(codes, np.full(N_ITEMS, 2, np.int32), (3, N_ITEMS), meta={"item_ids": data.item_ids})
    sids.save(os.path.join(workdir, "index"))
    tok = train_small_tokenizer(["movie drama history"] * 4, vocab_size=280)
    tok.add_tokens(list(TASK_TOKENS) + [sids.token(0, c) for c in range(3)]
                   + [sids.token(1, c) for c in range(N_ITEMS)])
    cfg = ModelConfig(vocab_size=round_up(tok.vocab_size, 8), hidden_size=32, intermediate_size=64,
                      num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16, max_position_embeddings=128)
    mesh = mesh_lib.make_mesh(config.mesh)
    params = model_api.init_params(cfg, jax.random.PRNGKey(0), mesh)
    save_model(os.path.join(workdir, "sft", "final"), params, cfg, tok, {"stage": "sft", "next_item_weight": 0.5})
    return params


def _direct_config():
    """Two Direct-mode RL steps of 4 prompts x 4 rollouts on the tiny workdir, a checkpoint each step."""
    config = base_config()
    config.data.max_history = 4
    config.tasks.direct_prompt = "dense"
    config.train.eval_beam, config.train.eval_topk, config.train.eval_batch = 4, 4, 16
    rl = config.rl
    rl.mode, rl.group_size, rl.batch_prompts, rl.mini_batch_prompts = "direct", 4, 4, 4
    rl.micro_batch_sequences, rl.rollout_chunk_prompts, rl.steps, rl.ppo_epochs = 8, 4, 2, 1
    rl.checkpoint_every, rl.learning_rate, rl.warmup_steps = 1, 5e-3, 0
    return config


@pytest.mark.slow
def test_rl_stage_runs_exports_and_resumes(tmp_path, monkeypatch):
    from gream_jax.train.srpo_stage import run_rl
    workdir = str(tmp_path)
    config = _direct_config()
    rl = config.rl
    rl.eval_every = 0
    rl.penalise_repeats, rl.repeat_reward = True, -0.5
    rl.future_window = 3          # rewards against the next training items too (rewards.window_reward)
    validate_config(config)
    sft_params = _write_workdir(workdir, monkeypatch, config)
    summary = run_rl(config, workdir)
    assert summary["steps"] == 2 and {"recall@10", "ndcg@10"} <= set(summary["test"])
    with open(os.path.join(workdir, "rl", "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    train_rows = [r for r in rows if "reward_mean" in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    for key in ("reward_mean", "exact_hit_rate", "zero_variance_share", "rollout_tokens_per_s", "repeat_rate"):
        assert key in train_rows[0]
    # 12 items, 4-item histories, an untrained model: some answers repeat the history, and they
    # are paid -0.5 (the only negative reward).
    rates = [r["repeat_rate"] for r in train_rows]
    assert all(0.0 <= x <= 1.0 for x in rates) and max(rates) > 0
    assert all(r["reward_mean"] >= -0.5 for r in train_rows)
    assert any("valid/ndcg@10" in r and r["step"] == 0 for r in rows)      # the SFT baseline
    model_cfg, params, _, meta = load_model(os.path.join(workdir, "rl", "final"))
    assert meta["stage"] == "rl" and meta["step"] == summary["best_step"]
    assert meta["next_item_weight"] == 0.5        # the SFT model's head, carried on
    if summary["best_step"] == 0:      # RL did not beat SFT on validation: SFT weights exported
        for a, b in zip(jax.tree.leaves(sft_params), jax.tree.leaves(params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert os.path.isdir(os.path.join(workdir, "rl", "tb"))
    # The final evaluation's per-user rows are the eval stage's, figure for figure: `eval.paired`
    # can compare RL with SFT from them alone.
    from gream_jax.eval.paired import load_ranks
    from gream_jax.eval.stage import run_eval
    rl_ranks = load_ranks(os.path.join(workdir, "rl", "per_user_test_direct.jsonl"))
    assert len(rl_ranks) == N_USERS
    hits5 = np.mean([0 <= rank < 5 for _, rank in rl_ranks.values()])
    assert hits5 == pytest.approx(summary["test"]["recall@5"])
    config.eval.modes = ("direct",)
    run_eval(config, workdir)
    assert load_ranks(os.path.join(workdir, "eval", "per_user_test_direct.jsonl")) == rl_ranks
    assert load_ranks(os.path.join(workdir, "rl", "per_user_valid_direct.jsonl")) == load_ranks(
        os.path.join(workdir, "eval", "per_user_valid_direct.jsonl"))
    # A checkpoint written before the paired selection (no SFT validation ranks in its meta) cannot
    # apply a paired-z rule: a clear error, not a z against the wrong model.
    meta_path = os.path.join(workdir, "rl", "checkpoints", "2", "meta", "metadata")
    with open(meta_path) as f:
        old_meta = json.load(f)
    assert len(old_meta.pop("sft_valid_ranks")) == N_USERS
    with open(meta_path, "w") as f:
        json.dump(old_meta, f)
    config.rl.steps, config.rl.select_min_z = 3, 1.0
    with pytest.raises(ValueError, match="predates the paired selection"):
        run_rl(config, workdir)
    # Resume: asking for one more step continues from the step-2 checkpoint.
    config.rl.select_min_z = 0.0
    summary = run_rl(config, workdir)
    assert summary["steps"] == 3
    with open(os.path.join(workdir, "rl", "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f if "reward_mean" in line]
    assert steps == [1, 2, 3]
    # The trace survives the resume, and replaying it gives the step the stage kept.
    from gream_jax.eval import rl_trace
    trace = rl_trace.load_trace(workdir)
    assert sorted(trace["valid"]) == [0, 2, 3] and "test" not in trace      # trace_test off
    assert rl_trace.selected_step(trace, "ndcg@10", 0.0, 0.0) == summary["best_step"]


@pytest.mark.slow
def test_rl_stage_with_beam_rollouts_and_the_rank_penalty(tmp_path, monkeypatch):
    """`config.rl.rollout="beam"`: each group is the Direct decoder's G best items (distinct, so
    every rollout is well formed), and with the rank penalty every group has reward variance;
    `config.rl.policy_item_head` runs the update on the fused policy. Also the selection's trace
    (`rl/trace.jsonl`, test included with `trace_test`) and the paired-z gate: at z >= 50 no RL step
    can replace the SFT model, so rl/final is the SFT model and its test ranks are step 0's."""
    from gream_jax.train.srpo_stage import run_rl
    workdir = str(tmp_path)
    config = _direct_config()
    rl = config.rl
    rl.rollout, rl.rank_penalty, rl.beam_size, rl.eval_every = "beam", 0.5, 6, 1
    config.eval.item_head_weight = 1.0           # the beam re-ranks with the head, and the policy holds it
    rl.policy_item_head = True
    rl.trace_test, rl.select_min_z = True, 50.0
    validate_config(config)
    _write_workdir(workdir, monkeypatch, config)
    summary = run_rl(config, workdir)
    assert summary["steps"] == 2
    assert summary["best_step"] == 0 and summary["sft_selected"]
    from gream_jax.eval import rl_trace
    from gream_jax.eval.paired import load_ranks
    trace = rl_trace.load_trace(workdir)
    assert sorted(trace["valid"]) == sorted(trace["test"]) == [0, 1, 2]
    users, ranks = trace["test"][0]
    final = load_ranks(os.path.join(workdir, "rl", "per_user_test_direct.jsonl"))
    assert len(users) == N_USERS and [final[str(u + 1)][1] for u in users] == ranks.tolist()
    assert rl_trace.selected_step(trace, "ndcg@10", 0.0, 50.0) == 0
    assert summary["select_min_z"] == 50.0
    with open(os.path.join(workdir, "rl", "metrics.jsonl")) as f:
        valid_rows = [r for r in map(json.loads, f) if "valid/paired_gain" in r]
    assert [r["step"] for r in valid_rows] == [0, 1, 2] and valid_rows[0]["valid/paired_gain"] == 0.0
    with open(os.path.join(workdir, "rl", "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    train_rows = [r for r in rows if "reward_mean" in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    for r in train_rows:
        assert r["well_formed_rate"] == 1.0 and r["zero_variance_share"] == 0.0
        assert r["updates"] == 1 and r["kl"] >= 0
    # 12 items, groups of 4: most answers are wrong and pay the rank penalty, so the mean is < the
    # residual credit alone could give (>= 0); a wrong answer at rank 1 alone costs 0.5.
    assert min(r["reward_mean"] for r in train_rows) < 0.2
    assert [r["step"] for r in rows if "valid/ndcg@10" in r] == [0, 1, 2]


@pytest.mark.slow
def test_rl_stage_in_reasoning_mode_selects_on_reasoning_validation(tmp_path, monkeypatch):
    """`config.rl.mode="reasoning"`: rollouts sample a chain before the SID, and the step RL keeps
    is chosen by Reasoning-mode validation (`select_mode` "" follows the mode) on
    `rl.eval_users` seeded users, the SFT model being step 0."""
    from gream_jax.train.srpo_stage import run_rl, validation_users
    workdir = str(tmp_path)
    config = _direct_config()
    rl = config.rl
    rl.mode, rl.max_think_tokens, rl.eval_every, rl.eval_users = "reasoning", 4, 1, 6
    config.eval.reasoning_budget = 4
    validate_config(config)
    _write_workdir(workdir, monkeypatch, config)
    summary = run_rl(config, workdir)
    assert summary["mode"] == "reasoning" and summary["select_mode"] == "reasoning"
    assert summary["select_users"] == 6 and summary["steps"] == 2
    with open(os.path.join(workdir, "rl", "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows if "valid/ndcg@10" in r] == [0, 1, 2]
    assert all(0.0 <= r["valid/recall@10"] <= 1.0 for r in rows if "valid/recall@10" in r)
    # The final Reasoning-mode evaluation writes the eval stage's rows, chains included, for its 6 users.
    with open(os.path.join(workdir, "rl", "per_user_test_reasoning.jsonl")) as f:
        user_rows = [json.loads(line) for line in f]
    assert len(user_rows) == 6 and all(isinstance(r["reasoning"], list) and r["samples"] for r in user_rows)
    hits10 = np.mean([0 <= r["hit_rank"] < 10 for r in user_rows])
    assert hits10 == pytest.approx(summary["test"]["recall@10"])
    # The users: rl.eval_users when set, else the eval stage's own reasoning users; Direct keeps SFT's rule.
    from gream_jax.eval.stage import reasoning_users
    assert len(validation_users(config, 16, "reasoning")) == 6
    rl.eval_users = 0
    config.eval.reasoning_users = 5
    np.testing.assert_array_equal(validation_users(config, 16, "reasoning"), reasoning_users(16, config))
    assert len(validation_users(config, 16, "reasoning")) == 5
    assert validation_users(config, 16, "direct") is None          # train.eval_users = 0: everyone
    config.eval.reasoning_users = 0
    assert validation_users(config, 16, "reasoning") is None


@pytest.mark.slow
def test_rl_stage_with_chain_rollouts_trains_the_answer_after_one_chain(tmp_path, monkeypatch):
    """`config.rl.rollout="chain"`: each group is one sampled chain and G answers after it. The
    update batch's sequences are the reasoning prompt + chain + `<answer>` followed by a SID, the
    chain stats are logged, and selection is on Reasoning-mode validation."""
    from gream_jax.train.srpo_stage import load_inputs, run_rl
    from gream_jax.train.srpo_trainer import SrpoTrainer
    from gream_jax.tasks.example import ANSWER_OPEN
    workdir = str(tmp_path)
    config = _direct_config()
    rl = config.rl
    rl.mode, rl.rollout, rl.eval_every, rl.eval_users = "reasoning", "chain", 1, 6
    config.eval.reasoning_budget = 5
    validate_config(config)
    _write_workdir(workdir, monkeypatch, config)
    summary = run_rl(config, workdir)
    assert summary["mode"] == "reasoning" and summary["select_mode"] == "reasoning" and summary["steps"] == 2
    with open(os.path.join(workdir, "rl", "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    train_rows = [r for r in rows if "reward_mean" in r]
    assert len(train_rows) == 2
    for r in train_rows:
        assert 0.0 <= r["chain_answered_rate"] <= 1.0 and 0.0 <= r["chain_tokens_mean"] <= 5.0
        assert r["well_formed_rate"] == 1.0            # the answers go through the trie
    # One step's groups, looked at directly: every prompt ends at <answer> after its chain.
    _, split, sids, model_cfg, params, tokenizer, _, mesh, rules = load_inputs(config, workdir)
    trainer = SrpoTrainer(config, model_cfg, params, tokenizer, sids, split, mesh, rules)
    histories = [split.train[u][:3] for u in range(4)]
    prompts = [trainer.prompt(h) for h in histories]
    targets = np.asarray(sids.codes)[[int(split.train[u][3]) for u in range(4)]]
    out = trainer.runner.run(trainer.params, prompts, targets, jax.random.PRNGKey(1))
    answer_open = tokenizer.token_to_id(ANSWER_OPEN)
    for prompt, chained, length in zip(prompts, out["prompt_ids"], out["chain_lengths"]):
        assert chained[:len(prompt)] == prompt and chained[-1] == answer_open
        assert len(chained) - len(prompt) - length in (1, 2)      # (+ </think>) + <answer>
    assert out["response_tokens"].shape == (4, rl.group_size, sids.codes.shape[1])
    assert out["codes"].min() >= 0                                  # every answer a real item's SID
    assert out["rewards"].shape == (4, rl.group_size)


def test_rl_chain_rollouts_are_checked():
    config = _direct_config()
    config.rl.rollout = "chain"                 # with mode="direct"
    with pytest.raises(Exception, match="rollout='chain' needs config.rl.mode='reasoning'"):
        validate_config(config)
    config.rl.mode, config.rl.constrained_answer = "reasoning", False
    with pytest.raises(Exception, match="constrained_answer=True"):
        validate_config(config)


def test_rl_select_mode_is_checked():
    config = _direct_config()
    config.rl.select_mode = "both"
    with pytest.raises(Exception, match="config.rl.select_mode='both'"):
        validate_config(config)
