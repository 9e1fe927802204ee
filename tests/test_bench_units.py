"""Pure parts of the throughput benchmark: FLOPs/MFU formula, workload, presets, report."""

import json
import os

import numpy as np
import pytest

from gream_jax.bench import flops, presets, report, workload


def test_qwen3_0p6b_flops_match_baselines():
    shape = presets.SHAPES["qwen3_0p6b"]
    assert flops.matmul_params(shape) == pytest.approx(596e6, rel=2e-3)      # baselines.md: 596 M
    assert flops.train_flops_per_token(shape, 2048) == pytest.approx(4.28e9, rel=2e-3)
    # baselines.md: the naive jitted flax model at 92,586 tokens/s is 40.0% MFU on one H100.
    peak = flops.peak_flops("NVIDIA H100 80GB HBM3")
    assert peak == 989.5e12
    assert flops.mfu(92_586, shape, 2048, 1, peak) == pytest.approx(0.400, abs=0.001)
    assert flops.mfu(1000.0, shape, 2048, 1, flops.peak_flops("cpu")) is None
    assert flops.peak_flops("cpu", override_tflops=2.0) == 2e12


def test_presets_and_overrides():
    p = presets.get_preset("small", batch=4, dtype="bfloat16")
    assert (p.batch, p.seq, p.dtype, p.shape.num_layers, p.shape.hidden_size, p.shape.vocab_size) == \
        (4, 256, "bfloat16", 4, 256, 8192)
    m = presets.get_preset("medium")
    assert (m.shape.num_layers, m.shape.hidden_size, m.shape.vocab_size, m.dtype) == (8, 512, 32768, "float32")
    q = presets.get_preset("qwen3_0p6b")
    assert (q.batch, q.seq, q.dtype, q.gen_batch, q.gen_prompt, q.gen_new) == (8, 2048, "bfloat16", 64, 128, 128)
    with pytest.raises(ValueError, match="unknown"):
        presets.get_preset("huge")
    with pytest.raises(ValueError, match="--batch=0"):
        presets.get_preset("small", batch=0)
    with pytest.raises(ValueError, match="beam_topk"):
        presets.get_preset("small", beam_topk=50)


def test_sid_workload_is_a_consistent_trie():
    p = presets.get_preset("tiny")
    codes = workload.sid_codes(p, seed=3)
    assert codes.shape == (p.n_items, len(p.sid_levels))
    assert len({tuple(r) for r in codes}) == p.n_items                 # distinct items
    table = workload.sid_token_table(p)
    assert table.max() == p.shape.vocab_size - 1                        # SID tokens end the vocabulary
    assert len(np.unique(table[table >= 0])) == sum(p.sid_levels)
    allowed = workload.prefix_allowed_table(codes, table)
    assert set(allowed[()]) == {int(table[0, c]) for c in codes[:, 0]}
    tokens = np.stack([table[level, codes[:, level]] for level in range(codes.shape[1])], axis=1)
    for row in tokens[:10]:                                             # every item is a trie path
        for depth in range(len(row)):
            assert int(row[depth]) in allowed[tuple(int(t) for t in row[:depth])]
    items = workload.tokens_to_items(tokens[None], codes, table)
    np.testing.assert_array_equal(items[0], np.arange(p.n_items))
    bogus = tokens[:1].copy()
    bogus[0, -1] = table[0, 0]                                          # a level-0 token at the end
    assert workload.tokens_to_items(bogus, codes, table)[0] == -1
    again = workload.train_tokens(p, seed=1)
    np.testing.assert_array_equal(again, workload.train_tokens(p, seed=1))
    assert again.min() >= workload.FIRST_ORDINARY_TOKEN and again.max() < p.shape.vocab_size


def _fake_results():
    t = lambda metric, v, s=0.1: {metric: v, "first_s": 3.0, "warmup_s": 0.1, "median_s": s,
                                  "min_s": s, "max_s": s, "steps": 20}
    return {
        "jax": {"train": t("tokens_per_s", 3000.0), "generate": t("new_tokens_per_s", 900.0),
                "beam": dict(t("users_per_s", 50.0), top_items=[[1, 2, 3], [4, 5, 6]])},
        "torch_eager": {"train": t("tokens_per_s", 1000.0), "generate": t("new_tokens_per_s", 300.0),
                        "beam": dict(t("users_per_s", 5.0), top_items=[[1, 2, 3], [4, 5, 7]])},
        "torch_compile": {"train": {"error": "RuntimeError: boom"}},
    }


def test_report_speedups_table_and_chart(tmp_path):
    p = presets.get_preset("small")
    env = {"jax_backend": "gpu", "jax_device_kind": "NVIDIA H100 80GB HBM3", "jax": "x"}
    summary = report.summarize(p, _fake_results(), env)
    assert summary["speedups"]["train"]["jax"] == pytest.approx(3.0)
    assert summary["speedups"]["beam"]["jax"] == pytest.approx(10.0)
    assert summary["speedups"]["train"]["torch_compile"] is None
    assert summary["beam_topk_agreement"] == pytest.approx(5 / 6)
    expected_mfu = 3000.0 * flops.train_flops_per_token(p.shape, p.seq) / 989.5e12
    assert summary["results"]["jax"]["train"]["mfu"] == pytest.approx(expected_mfu)
    md = report.markdown(summary)
    assert "| train | gream_jax (jit) | 3,000 tok/s | 3.00x |" in md
    assert "failed: RuntimeError: boom" in md
    paths = report.write_all(summary, str(tmp_path), "bench_test")
    assert json.load(open(paths["json"]))["speedups"]["generate"]["jax"] == pytest.approx(3.0)
    assert os.path.getsize(paths["png"]) > 10_000
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
