"""Paired comparison of two per-user evaluation files (gream_jax/eval/paired.py)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from gream_jax.eval import paired


def test_paired_difference_against_hand_values():
    a = np.array([0, -1, 3, 12])          # hit@10: 1, 0, 1, 0
    b = np.array([1, 2, -1, 12])          # hit@10: 1, 1, 0, 0
    r = paired.paired_difference(a, b, 10)
    assert r["recall"]["a"] == 0.5 and r["recall"]["b"] == 0.5 and r["recall"]["diff"] == 0.0
    assert r["recall"]["only_a"] == 1 and r["recall"]["only_b"] == 1
    d = np.array([0, 1, -1, 0], float)
    assert r["recall"]["se"] == pytest.approx(np.std(d, ddof=1) / 2)
    ndcg_a = np.array([1.0, 0.0, 1 / math.log2(5), 0.0])
    ndcg_b = np.array([1 / math.log2(3), 1 / math.log2(4), 0.0, 0.0])
    assert r["ndcg"]["diff"] == pytest.approx(np.mean(ndcg_b - ndcg_a))
    # rank 12 is outside the top 10 but inside the top 20
    assert paired.paired_difference(a, b, 20)["recall"]["a"] == 0.75


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_compare_files_pairs_users_and_refuses_mismatches(tmp_path):
    rows_a = [{"user": "u1", "target": "7", "hit_rank": 0}, {"user": "u2", "target": "8", "hit_rank": -1}]
    rows_b = [{"user": "u2", "target": "8", "hit_rank": 4}, {"user": "u1", "target": "7", "hit_rank": 0}]
    a, b = _write(tmp_path / "a.jsonl", rows_a), _write(tmp_path / "b.jsonl", rows_b)
    (r,) = paired.compare_files(a, b, (5,))
    assert r["recall"]["diff"] == pytest.approx(0.5)       # u2 gains a hit, order of rows is irrelevant
    assert "within noise" in paired.format_table([r]) or "B better" in paired.format_table([r])
    # the same ranks on both sides (e.g. RL kept the SFT model): no difference, not "A better"
    (same,) = paired.compare_files(a, a, (5,))
    assert same["recall"]["diff"] == 0 and same["recall"]["se"] == 0
    assert "| no difference |" in paired.format_table([same]) and "better" not in paired.format_table([same])
    other = _write(tmp_path / "c.jsonl", [{"user": "u1", "target": "9", "hit_rank": 0},
                                          {"user": "u2", "target": "8", "hit_rank": 0}])
    with pytest.raises(ValueError, match="different splits"):
        paired.compare_files(a, other, (5,))
    fewer = _write(tmp_path / "d.jsonl", rows_a[:1])
    with pytest.raises(ValueError, match="different users"):
        paired.compare_files(a, fewer, (5,))
    bad = tmp_path / "e.jsonl"
    bad.write_text('{"user": "u1", "target": "7", "hit_rank": 0}\n{"user": "u2"}\n')
    with pytest.raises(ValueError, match="e.jsonl:2: not a per-user eval row"):
        paired.load_ranks(str(bad))
    bad.write_text('{"user": "u1", "target": "7", "hit_rank": 0}\n\n{"user": "u1", "target": "7", "hit_rank": 1}\n')
    with pytest.raises(ValueError, match="e.jsonl:3: user 'u1' appears twice"):     # blank lines keep the count
        paired.load_ranks(str(bad))
    bad.write_text('{"user": "u1", "target": "7", "hit_rank": 0}\nnot json\n')
    with pytest.raises(ValueError, match="e.jsonl:2: not a per-user eval row"):
        paired.load_ranks(str(bad))
    with pytest.raises(ValueError, match="no such file"):
        paired.load_ranks(str(tmp_path / "missing.jsonl"))


def test_pooled_pairs_average_each_users_difference(tmp_path, capsys):
    """Two pairs (seeds or chain draws): each user's difference is the mean of its two B - A, and the
    standard error is over users of those means; the CLI takes comma-separated files."""
    ranks_a = np.array([[0, -1, -1, 5], [-1, -1, 2, 5]])
    ranks_b = np.array([[0, 1, -1, -1], [0, 3, 2, -1]])
    r = paired.paired_difference(ranks_a, ranks_b, 10)
    d = (np.array([0, 1, 0, -1]) + np.array([1, 1, 0, -1])) / 2.0            # per user, hit@10
    assert r["pairs"] == 2 and r["users"] == 4
    assert r["recall"]["diff"] == pytest.approx(d.mean())
    assert r["recall"]["se"] == pytest.approx(np.std(d, ddof=1) / 2)
    single = paired.paired_difference(ranks_a[0], ranks_b[0], 10)
    assert single["pairs"] == 1 and single["recall"]["diff"] == pytest.approx(0.0)
    users = ["u1", "u2", "u3", "u4"]
    files = {}
    for name, ranks in (("a", ranks_a), ("b", ranks_b)):
        files[name] = [_write(tmp_path / f"{name}{i}.jsonl", [{"user": u, "target": "t" + u, "hit_rank": int(x)}
                                                                for u, x in zip(users, row)])
                       for i, row in enumerate(ranks)]
    (pooled,) = paired.compare_files(files["a"], files["b"], (10,))
    assert pooled["recall"]["diff"] == pytest.approx(d.mean())
    with pytest.raises(ValueError, match="one B file per A file"):
        paired.compare_files(files["a"], files["b"][:1], (10,))
    paired.main([f"--a={','.join(files['a'])}", f"--b={','.join(files['b'])}", "--ks=10"])
    out = capsys.readouterr().out
    assert "pooled over 2 pairs" in out and "| recall@10 |" in out
    # each pair alone: pair 1 (users' hit@10 differences 0, 1, 0, -1) nets 0, pair 2 (1, 1, 0, -1) +0.25
    pair_rows = [line for line in out.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(pair_rows) == 2
    assert pair_rows[0].split(" | ")[2].startswith("+0.0000") and pair_rows[1].split(" | ")[2].startswith("+0.2500")


def test_cli_piped_into_head_exits_without_a_traceback(tmp_path):
    """`python -m gream_jax.eval.paired ... | head -1`: the closed pipe is not reported as a crash."""
    rows = [{"user": f"u{i}", "target": str(i), "hit_rank": i % 12 - 1} for i in range(50)]
    a, b = _write(tmp_path / "a.jsonl", rows), _write(tmp_path / "b.jsonl", rows[::-1])
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo)
    # 400 pairs print ~80 kB, more than a pipe holds, so writes continue after `head` has gone.
    many = 400
    cmd = (f"{sys.executable} -m gream_jax.eval.paired --a={','.join([a] * many)} --b={','.join([b] * many)} "
           f"| head -n 1")
    out = subprocess.run(["bash", "-c", cmd], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("pooled over 400 pairs")
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
