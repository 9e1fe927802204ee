"""The eval stage and the recommend command end to end on a tiny workdir (random tiny model)."""

import json
import os

import numpy as np
import pytest

from gream_jax import mesh as mesh_lib
from gream_jax.config_defaults import ConfigError, base_config, validate_config
from gream_jax.data import prepare
from gream_jax.data.types import InteractionData, ItemText
from gream_jax.eval import metrics
from gream_jax.eval.stage import run_eval
from gream_jax.index.sid import SemanticIds
from gream_jax.index.trie import build_trie
from gream_jax.model.builder import build_model
from gream_jax.model.store import save_model

N_ITEMS, N_USERS = 30, 16


def tiny_config():
    c = base_config()
    c.name = "tiny"
    c.stage = "eval"
    c.data.max_history = 6
    c.model.update(num_layers=1, hidden_size=32, num_heads=2, num_kv_heads=1, head_dim=16,
                   intermediate_size=64, tokenizer_vocab_size=300, vocab_pad_multiple=8)
    c.eval.update(beam_size=8, top_k=5, ks=(1, 5), reasoning_users=8, reasoning_budget=5,
                  num_samples=2, temperature=1.0, max_batch=8, prompt_bucket=8)
    return c


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("eval_wd"))
    config = tiny_config()
    rng = np.random.default_rng(0)
    data = InteractionData(
        name="ml100k", item_ids=[f"i{i}" for i in range(N_ITEMS)], user_ids=[f"u{u}" for u in range(N_USERS)],
        items=[ItemText(title=f"Movie {i}", brand="", categories="drama", description="", reviews=[])
               for i in range(N_ITEMS)],
        sequences=[rng.integers(0, N_ITEMS, rng.integers(5, 10)).astype(np.int32) for _ in range(N_USERS)])
    orig = prepare.load_dataset
    prepare.load_dataset = lambda cfg: data
    try:
        prepare.run_prepare(config, wd)
    finally:
        prepare.load_dataset = orig
    codes = np.stack([np.arange(N_ITEMS) % 3, (np.arange(N_ITEMS) // 3) % 4, np.arange(N_ITEMS)], 1)
    sids = SemanticIds(codes=codes, lengths=np.full(N_ITEMS, 3), level_sizes=(3, 4, N_ITEMS),
                       meta={"item_ids": data.item_ids, "dataset": "ml100k"})
    sids.save(os.path.join(wd, "index"))
    build_trie(sids).save(os.path.join(wd, "index", "trie.npz"))
    mesh = mesh_lib.make_mesh(config.mesh)
    model_cfg, params, tokenizer = build_model(config, wd, sids, data.items, mesh)
    save_model(os.path.join(wd, "sft", "final"), params, model_cfg, tokenizer, {"stage": "sft", "step": 3})
    with open(os.path.join(wd, "sft", "metrics.jsonl"), "w") as f:
        for step in range(5):
            f.write(json.dumps({"step": step, "loss": 3.0 - 0.1 * step, "lr": 1e-3}) + "\n")
    return wd, config


def test_run_eval_writes_consistent_results(workdir, capsys):
    wd, config = workdir
    summary = run_eval(config, wd)
    out = capsys.readouterr().out
    assert "| test | direct |" in out and "reasoning*" in out and "8 of 16 users" in out
    results = json.load(open(os.path.join(wd, "results.json")))
    assert set(results) == {"test", "valid"}
    for which in ("test", "valid"):
        assert set(results[which]) == {"direct", "reasoning"}
        for mode, users in (("direct", N_USERS), ("reasoning", 8)):
            m = results[which][mode]
            assert m["users"] == users and {"recall@1", "recall@5", "ndcg@5"} <= set(m)
            rows = [json.loads(l) for l in open(os.path.join(wd, "eval", f"per_user_{which}_{mode}.jsonl"))]
            assert len(rows) == users
            ranked = np.array([[int(t["item"][1:]) for t in r["topk"]] for r in rows])
            targets = np.array([int(r["target"][1:]) for r in rows])
            assert ranked.shape == (users, 5) and all(len(set(r)) == 5 for r in ranked)
            assert m["recall@5"] == pytest.approx(metrics.recall_at_k(ranked, targets, 5))
            assert m["ndcg@5"] == pytest.approx(metrics.ndcg_at_k(ranked, targets, 5))
            scores = np.array([[t["score"] for t in r["topk"]] for r in rows])
            assert (np.diff(scores, axis=1) <= 1e-4).all()
            if mode == "reasoning":
                assert "pass@1" in m and all(len(r["reasoning"]) == 2 for r in rows)
                # step 4 checked against the answer (eval.chain_checks): an untrained model's chains
                # rarely name a group, but the shares are always reported and lie in [0, 1]
                assert 0.0 <= m["chain_names_group"] <= 1.0 and 0.0 < m["chance_group_correct"] <= 1.0
    assert os.path.exists(os.path.join(wd, "eval", "results.md"))
    assert "| split | names a group | group right (chance) |" in out       # the chain checks' table
    assert summary["training_curves"] and os.path.getsize(os.path.join(wd, "eval", "training_curves.png")) > 1000


def test_direct_is_deterministic_and_batch_independent(workdir):
    """Same top-K whatever the batch size (the padding rows never leak into real rows)."""
    wd, config = workdir
    from gream_jax.data.prepare import load_prepared
    from gream_jax.infer.recommender import recommend_direct
    from gream_jax.model.store import load_model
    mesh = mesh_lib.make_mesh(config.mesh)
    model_cfg, params, tokenizer, _ = load_model(os.path.join(wd, "sft", "final"), mesh)
    data, split = load_prepared(wd)
    sids = SemanticIds.load(os.path.join(wd, "index"))
    trie = build_trie(sids)
    hist = [split.history("test", u) for u in range(N_USERS)]
    a = recommend_direct(params, model_cfg, tokenizer, sids, trie, hist, config, mesh)
    config2 = tiny_config()
    config2.eval.max_batch = 16
    b = recommend_direct(params, model_cfg, tokenizer, sids, trie, hist[:13], config2, mesh)
    np.testing.assert_array_equal(a.items[:13], b.items)
    np.testing.assert_allclose(a.scores[:13], b.scores, atol=1e-4)


def test_impossible_settings_fail_at_startup(workdir):
    wd, _ = workdir
    config = tiny_config()
    config.eval.top_k = 10
    with pytest.raises(ConfigError, match="config.eval.beam_size=8"):
        validate_config(config)
    config = tiny_config()
    config.eval.max_batch = 0
    config.eval.memory_budget_mb = 1
    config.eval.beam_size = 400
    config.eval.reasoning_budget = 2000
    with pytest.raises(ValueError, match="config.eval.max_batch=0"):
        run_eval(config, wd)


def test_recommend_command_prints_titles(workdir, capsys):
    wd, _ = workdir
    from gream_jax import recommend
    recommend.main_with_args(workdir=wd, items="i1,i2,i3", user="", mode="direct", top_k=3,
                             config=tiny_config())
    out = capsys.readouterr().out
    assert out.count("Movie ") >= 3 and "1." in out
    recommend.main_with_args(workdir=wd, items="", user="u3", mode="reasoning", top_k=3, config=tiny_config())
    out = capsys.readouterr().out
    assert "reasoning" in out.lower() and "Movie " in out
    with pytest.raises(ValueError, match="unknown item id 'nope'"):
        recommend.main_with_args(workdir=wd, items="nope", user="", mode="direct", top_k=3, config=tiny_config())


def test_item_head_reranking_through_the_eval_stage(workdir, tmp_path):
    """config.eval.item_head_weight: refused for a model trained without the next-item head; with
    one, the top-K drawn from the plain beam's beam_size items, in the fused order."""
    import shutil
    from gream_jax.model.store import load_model
    wd = str(tmp_path / "wd")
    shutil.copytree(workdir[0], wd)
    config = tiny_config()
    config.eval.modes = ("direct",)
    config.eval.item_head_weight = 1.0
    validate_config(config)
    with pytest.raises(ValueError, match="trained without it"):
        run_eval(config, wd)
    model_cfg, params, tokenizer, meta = load_model(os.path.join(wd, "sft", "final"))
    save_model(os.path.join(wd, "sft", "final"), params, model_cfg, tokenizer, {**meta, "next_item_weight": 1.0})
    topk = {}
    for weight, k in ((0.0, 8), (1.0, 5)):      # the plain run returns all 8 beams
        config.eval.item_head_weight = weight
        config.eval.top_k = k
        run_eval(config, wd)
        assert ("re-ranked by log P + 1 log q" in open(os.path.join(wd, "eval", "results.md")).read()) == (weight > 0)
        rows = [json.loads(l) for l in open(os.path.join(wd, "eval", "per_user_test_direct.jsonl"))]
        topk[weight] = [[t["item"] for t in r["topk"]] for r in rows]
    assert all(set(b) <= set(a) and len(b) == 5 for a, b in zip(topk[0.0], topk[1.0]))
    assert [a[:5] for a in topk[0.0]] != topk[1.0]


def test_item_head_weight_chosen_on_valid_through_the_eval_stage(workdir, tmp_path, capsys):
    """config.eval.item_head_weights: the valid split decoded once and scored at every weight, the
    best by select_metric kept; the test split ranked at that weight is what a fixed
    item_head_weight of the same value gives; the recommend command uses the chosen weight."""
    import shutil
    from gream_jax import recommend
    from gream_jax.model.store import load_model
    wd = str(tmp_path / "wd")
    shutil.copytree(workdir[0], wd)
    model_dir = os.path.join(wd, "sft", "final")
    model_cfg, params, tokenizer, meta = load_model(model_dir)
    save_model(model_dir, params, model_cfg, tokenizer, {**meta, "next_item_weight": 1.0})
    config = tiny_config()
    config.eval.modes = ("direct",)
    config.eval.item_head_weights = (0.0, 0.5, 3.0)
    config.eval.select_metric = "recall@5"
    validate_config(config)
    with pytest.raises(FileNotFoundError, match="item_head_weights.json"):      # no eval yet
        recommend.main_with_args(workdir=wd, items="i1,i2", user="", mode="direct", top_k=3, config=config)
    run_eval(config, wd)
    saved = json.load(open(os.path.join(wd, "eval", "item_head_weights.json")))
    assert [r["weight"] for r in saved["valid"]] == [0.0, 0.5, 3.0]
    best = max(saved["valid"], key=lambda r: r["recall@5"])["weight"]
    assert saved["chosen"] == best and saved["metric"] == "recall@5"
    results = json.load(open(os.path.join(wd, "results.json")))
    assert results["valid"]["direct"]["item_head_weight"] == best
    chosen_row = next(r for r in saved["valid"] if r["weight"] == best)
    assert results["valid"]["direct"]["recall@5"] == pytest.approx(chosen_row["recall@5"])
    assert "(chosen)" in open(os.path.join(wd, "eval", "results.md")).read()
    swept = {w: [json.loads(l)["topk"] for l in open(os.path.join(wd, "eval", f"per_user_{w}_direct.jsonl"))]
             for w in ("test", "valid")}

    fixed = tiny_config()
    fixed.eval.modes = ("direct",)
    fixed.eval.item_head_weight = best
    run_eval(fixed, wd)
    for which in ("test", "valid"):
        rows = [json.loads(l)["topk"] for l in open(os.path.join(wd, "eval", f"per_user_{which}_direct.jsonl"))]
        assert [[t["item"] for t in r] for r in rows] == [[t["item"] for t in r] for r in swept[which]]
    # The recommend command reads the weight the sweep chose for this model; a stale file is refused.
    head_weight_json = os.path.join(wd, "eval", "item_head_weights.json")
    recommend.main_with_args(workdir=wd, items="i1,i2", user="", mode="direct", top_k=3, config=config)
    assert "1." in capsys.readouterr().out
    json.dump({**saved, "model": "/elsewhere"}, open(head_weight_json, "w"))
    with pytest.raises(ValueError, match="chosen for '/elsewhere'"):
        recommend.main_with_args(workdir=wd, items="i1,i2", user="", mode="direct", top_k=3, config=config)


@pytest.mark.parametrize("field,value,message", [
    ("item_head_weights", (1.0, -1.0), "every weight must be >= 0"),
    ("item_head_weights", (1.0, 1.0), "distinct"),
    ("splits", ("test",), "needs 'valid' in config.eval.splits"),
    ("select_metric", "ndcg@3", "K in config.eval.ks"),
    ("select_metric", "mrr@5", "'recall@K' or 'ndcg@K'"),
])
def test_item_head_weight_sweep_config_errors(field, value, message):
    config = tiny_config()
    config.index.collision = "item_token"
    config.eval.item_head_weights = (1.0, 2.0)
    config.eval[field] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(config)
