"""config.train.select_metric: the SFT loop keeps (and exports) the update with the best figure of that metric."""

import json

import jax
import pytest

from sft_toy import tiny_config, tiny_inputs

# Validation figures at updates 2, 4, 6 on which Recall@10 and NDCG@5 disagree about the best update.
SCRIPT = [{"recall@5": .1, "recall@10": .30, "ndcg@5": .10, "ndcg@10": .1},
          {"recall@5": .1, "recall@10": .10, "ndcg@5": .40, "ndcg@10": .1},
          {"recall@5": .1, "recall@10": .20, "ndcg@5": .20, "ndcg@10": .1}]


@pytest.mark.parametrize("metric,expected_step", [("ndcg@5", 4), ("recall@10", 2)])
def test_best_update_is_the_argmax_of_the_selected_metric(tmp_path, monkeypatch, metric, expected_step):
    from gream_jax.train import sft_validation
    from gream_jax.train.sft_stage import train
    calls = []

    def scripted(self, params, split, which, users=None):
        calls.append(which)
        return dict(SCRIPT[min(len(calls), len(SCRIPT)) - 1])
    monkeypatch.setattr(sft_validation.DirectValidator, "evaluate", scripted)
    config = tiny_config(steps=6, eval_every=2, checkpoint_every=2, select_metric=metric)
    stage = str(tmp_path / "sft")
    summary, _, best_state, best_meta = train(config, stage, tiny_inputs(config, jax.devices()[:1]),
                                              evaluate_test=False)
    rows = [json.loads(line) for line in open(tmp_path / "sft" / "metrics.jsonl")]
    assert [(r["step"], r[f"valid/{metric}"]) for r in rows if f"valid/{metric}" in r] == \
        [(2 * (i + 1), s[metric]) for i, s in enumerate(SCRIPT)]
    assert summary["best_step"] == best_meta["step"] == int(best_state["step"]) == expected_step
    assert best_meta["select_metric"] == metric and best_meta["best"] == SCRIPT[expected_step // 2 - 1][metric]

    # Resuming the same workdir under another selection metric is refused, not silently mixed.
    other = tiny_config(steps=8, eval_every=2, checkpoint_every=2,
                        select_metric="recall@5" if metric != "recall@5" else "ndcg@10")
    with pytest.raises(ValueError, match="resuming a run that selected by"):
        train(other, stage, tiny_inputs(other, jax.devices()[:1]), evaluate_test=False)
