"""The rl stage's selection rule (`train.rl_selection`) and its replay (`eval.rl_trace`)."""

import json
import math
import os

import numpy as np
import pytest

from gream_jax.train.rl_selection import improves, paired_gain, per_user_metric, replay_selection


def test_per_user_metric_from_ranks():
    ranks = np.array([0, 1, 9, 10, -1])
    np.testing.assert_allclose(per_user_metric(ranks, "recall@10"), [1, 1, 1, 0, 0])
    np.testing.assert_allclose(per_user_metric(ranks, "ndcg@10"), [1, 1 / math.log2(3), 1 / math.log2(11), 0, 0])
    np.testing.assert_allclose(per_user_metric(ranks, "recall@1"), [1, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="recall@K or ndcg@K"):
        per_user_metric(ranks, "mrr@10")


def test_paired_gain_hand_computed():
    base = np.array([0, -1, -1, 3])
    cand = np.array([0, 0, -1, -1])                 # recall@5 per user: base 1,0,0,1 -> cand 1,1,0,0
    gain, se, z = paired_gain(cand, base, "recall@5")
    d = np.array([0.0, 1.0, 0.0, -1.0])
    assert gain == pytest.approx(0.0) and se == pytest.approx(d.std(ddof=1) / 2) and z == pytest.approx(0.0)
    gain, se, z = paired_gain(np.array([0, 0, 0, 3]), base, "recall@5")      # two users gained, none lost
    assert gain == pytest.approx(0.5) and se == pytest.approx(np.std([0, 1, 1, 0], ddof=1) / 2)
    assert z == pytest.approx(0.5 / se)
    assert paired_gain(base, base, "ndcg@10") == (0.0, 0.0, 0.0)              # the SFT model against itself
    assert paired_gain(np.zeros(3, int), np.full(3, -1), "recall@1")[2] == math.inf   # constant gain
    with pytest.raises(ValueError, match="same users"):
        paired_gain(np.zeros(3, int), np.zeros(4, int), "recall@1")


def test_improves_margin_and_paired_z():
    assert improves(0.05, None, 0.01, None, 2.0)              # the first validation (SFT) always sets the bar
    assert improves(0.0701, 0.0700) and not improves(0.0700, 0.0700)
    assert not improves(0.0706, 0.0700, 0.005) and improves(0.0751, 0.0700, 0.005)
    assert improves(0.0710, 0.0700, 0.0, z=1.9) and not improves(0.0710, 0.0700, 0.0, z=1.9, min_z=2.0)
    assert improves(0.0710, 0.0700, 0.0, z=2.0, min_z=2.0)
    assert not improves(0.0690, 0.0700, 0.0, z=5.0, min_z=2.0)    # must still beat the best so far
    with pytest.raises(ValueError, match="paired z"):
        improves(0.0710, 0.0700, 0.0, z=None, min_z=1.0)


def test_replay_selection_keeps_what_the_stage_keeps():
    steps, values, zs = [0, 10, 20, 30], [0.070, 0.072, 0.075, 0.074], [0.0, 0.8, 2.5, 2.1]
    assert replay_selection(steps, values, zs) == 20
    assert replay_selection(steps, values, zs, min_z=3.0) == 0               # nothing beats the SFT model by 3 s.e.
    assert replay_selection(steps, values, [0.0, 2.2, 1.0, 1.9], min_z=2.0) == 10   # 20 and 30 fail the z test
    assert replay_selection(steps, values, [0.0, 2.2, 1.0, 2.1], min_z=2.0) == 30   # 30 beats 10 and passes
    assert replay_selection(steps, values, zs, min_gain=0.004) == 20
    assert replay_selection(steps, values, zs, min_gain=0.006) == 0
    with pytest.raises(ValueError, match="no validations"):
        replay_selection([], [], [])


def test_select_min_z_and_trace_config_checked():
    from gream_jax.config_defaults import base_config
    from gream_jax.config_defaults.base import ConfigError, validate_config
    config = base_config()
    assert config.rl.select_min_gain == 0.0 and config.rl.trace_test is False
    for field in ("select_min_gain", "select_min_z"):
        config = base_config()
        config.rl[field] = -0.01
        with pytest.raises(ConfigError, match=field):
            validate_config(config)


def _write_trace(workdir, rows):
    os.makedirs(os.path.join(workdir, "rl"), exist_ok=True)
    with open(os.path.join(workdir, "rl", "trace.jsonl"), "w") as f:
        for step, which, ranks in rows:
            f.write(json.dumps({"step": step, "split": which, "users": list(range(len(ranks))), "ranks": ranks}) + "\n")


def test_rl_trace_replays_rules_and_pools_runs(tmp_path, capsys):
    from gream_jax.eval import rl_trace
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    # Run a: step 10 gains one valid user of four (z < 2), and loses one test user.
    _write_trace(a, [(0, "valid", [-1, -1, 0, 0]), (0, "test", [0, 0, -1, -1]),
                     (10, "valid", [0, -1, 0, 0]), (10, "test", [0, -1, -1, -1])])
    _write_trace(b, [(0, "valid", [-1, -1, 0, 0]), (0, "test", [0, 0, -1, -1]),
                     (10, "valid", [-1, -1, 0, 0]), (10, "test", [0, 0, 0, -1])])
    trace = rl_trace.load_trace(a)
    assert rl_trace.selected_step(trace, "recall@1", 0.0, 0.0) == 10
    assert rl_trace.selected_step(trace, "recall@1", 0.0, 2.0) == 0
    gains = rl_trace.gains_over_sft(trace, "test", "recall@1")
    np.testing.assert_allclose(gains[10], [0, -1, 0, 0])
    rl_trace.main([f"--workdirs={a},{b}", "--metric=recall@1", "--min_z=0,2"])
    out = capsys.readouterr().out
    # min_z 0: a keeps 10 (test -1/4), b keeps 0 (its step 10 does not beat the SFT model on valid):
    # pooled per user, test gain = mean of (-1/4, 0) = -0.125.
    assert "| min_gain 0, min_z 0 | 10, 0 | +0.1250" in out and "-0.1250" in out
    assert "| min_gain 0, min_z 2 | 0, 0 | +0.0000 (0.0000) | +0.0000 (0.0000) | 0 |" in out
    # The pooled trajectory: step 10's valid gain is (+1/4 + 0) / 2, its test gain (-1/4 + +1/4) / 2.
    pooled = rl_trace.pooled_table([(a, trace), (b, rl_trace.load_trace(b))], "recall@1")
    assert "| 10 | +0.1250 (0.1250) | +0.0000 (0.2041) |" in pooled and "pooled per user (2 runs)" in out
    with pytest.raises(SystemExit, match="no such file"):
        rl_trace.main([f"--workdirs={tmp_path / 'missing'}"])
    _write_trace(a, [(10, "valid", [0, 0])])
    with pytest.raises(SystemExit, match="step-0"):
        rl_trace.main([f"--workdirs={a}"])
    path = os.path.join(a, "rl", "trace.jsonl")
    with open(path, "a") as f:
        f.write(json.dumps({"step": 20, "split": "valid", "users": [0, 1, 2], "ranks": [0]}) + "\n")
        f.write('{"step": 30}\n')
    with pytest.raises(ValueError, match=r"trace.jsonl:2: 3 users but 1 ranks"):
        rl_trace.load_trace(a)
    with open(path, "w") as f:
        f.write('{"step": 30}\n')
    with pytest.raises(ValueError, match=r"trace.jsonl:1: not a trace row"):
        rl_trace.load_trace(a)


def test_resumed_rows_keep_those_up_to_the_checkpoint(tmp_path):
    from gream_jax.train.srpo_stage import rows_up_to
    path = tmp_path / "metrics.jsonl"
    assert rows_up_to(str(path), 5, "a row") == []                     # a first run has none
    path.write_text('{"step": 4, "x": 1}\n\n{"step": 5}\n{"step": 6}\n')
    assert rows_up_to(str(path), 5, "a row") == [{"step": 4, "x": 1}, {"step": 5}]
    path.write_text('{"step": 4}\n{"no_step": 1}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2: not a row"):
        rows_up_to(str(path), 5, "a row")


def _write_split(workdir, train, valid_targets, test_targets):
    from gream_jax.data.split import Split
    os.makedirs(os.path.join(workdir, "data"), exist_ok=True)
    split = Split(train=[np.asarray(t, np.int32) for t in train], valid_targets=np.asarray(valid_targets, np.int32),
                  test_targets=np.asarray(test_targets, np.int32), max_history=20)
    np.savez(os.path.join(workdir, "data", "split.npz"), **split.to_arrays())


def test_rl_trace_gain_by_target_popularity(tmp_path, capsys):
    """`--by_popularity`: users split into equal thirds by their target's training count, the gain
    pooled per user over runs in each third; runs of another split are refused."""
    from gream_jax.eval import rl_trace
    assert rl_trace.popularity_thirds(np.array([5, 1, 9, 1, 7, 3])).tolist() == [1, 0, 2, 0, 2, 1]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    # Item 0 is rated 4 times in training, item 1 twice, item 2 once: users 0-1 want item 2 (low),
    # users 2-3 item 1 (mid), users 4-5 item 0 (high), on both splits.
    train = [[0, 0], [0, 1], [0, 1], [2], [], []]
    targets = [2, 2, 1, 1, 0, 0]
    for w in (a, b):
        _write_split(w, train, targets, targets)
    # Step 10: both runs lose user 0's hit (low third) and gain users 4 and 5 (high third) on valid;
    # on test only run a gains user 4.
    _write_trace(a, [(0, "valid", [0, -1, 0, -1, -1, -1]), (0, "test", [-1] * 6),
                     (10, "valid", [-1, -1, 0, -1, 0, 0]), (10, "test", [-1, -1, -1, -1, 0, -1])])
    _write_trace(b, [(0, "valid", [0, -1, 0, -1, -1, -1]), (0, "test", [-1] * 6),
                     (10, "valid", [-1, -1, 0, -1, 0, 0]), (10, "test", [-1] * 6)])
    popularity = rl_trace.load_target_popularity([a, b])
    np.testing.assert_array_equal(popularity["valid"], [1, 1, 2, 2, 4, 4])
    traces = [(a, rl_trace.load_trace(a)), (b, rl_trace.load_trace(b))]
    table = rl_trace.popularity_table(traces, popularity, 10, "recall@1")
    assert "| valid | low third | 2 | 1.0 | 0.5000 | -0.5000 (0.5000) |" in table
    assert "| valid | mid third | 2 | 2.0 | 0.5000 | +0.0000 (0.0000) |" in table
    assert "| valid | high third | 2 | 4.0 | 0.0000 | +1.0000 (0.0000) |" in table
    assert "| test | high third | 2 | 4.0 | 0.0000 | +0.2500 (0.2500) |" in table
    rl_trace.main([f"--workdirs={a},{b}", "--metric=recall@1", "--by_popularity=10"])
    assert "by target popularity, step 10 (2 run(s))" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="step 20: not validated on valid"):
        rl_trace.main([f"--workdirs={a},{b}", "--metric=recall@1", "--by_popularity=20"])
    _write_split(b, train, targets, [0, 0, 1, 1, 2, 2])
    with pytest.raises(SystemExit, match="other targets than"):
        rl_trace.main([f"--workdirs={a},{b}", "--by_popularity=10"])
    with pytest.raises(SystemExit, match="--by_popularity reads the prepared split"):
        rl_trace.main([f"--workdirs={_trace_only(tmp_path, a)}", "--by_popularity=10"])


def _trace_only(tmp_path, source):
    """A workdir holding `source`'s trace and no data/."""
    import shutil
    w = str(tmp_path / "trace_only")
    os.makedirs(os.path.join(w, "rl"), exist_ok=True)
    shutil.copy(os.path.join(source, "rl", "trace.jsonl"), os.path.join(w, "rl", "trace.jsonl"))
    return w
