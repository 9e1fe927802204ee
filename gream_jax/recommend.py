"""Recommend items for one history from a trained workdir, printing titles (and the reasoning).

    python -m gream_jax.recommend --workdir=DIR --items="id1,id2,..."        # a history of raw item ids
    python -m gream_jax.recommend --workdir=DIR --user=ID [--mode=reasoning]  # a known user
    options: --top_k=10, --config=configs/ml100k.py (prompt/decoding settings; default: base config)

`--user` recommends the item after everything the user did (train + valid + test items, the
most recent `config.data.max_history`). The model is `WORKDIR/rl/final` if present, else
`WORKDIR/sft/final` (or `config.eval.checkpoint`), decoded exactly as in the eval stage.
"""

from __future__ import annotations

import copy
import os

import numpy as np
from absl import app, flags
from ml_collections import config_flags


def _define_flags() -> dict:
    """Defines this command's flags; called only when run as a program.

    Flags are process-global in absl, so defining them at import time would clash with
    `gream_jax.main`'s `--config`/`--workdir` whenever both modules are imported (tests, notebooks).
    """
    return {
        "config": config_flags.DEFINE_config_file("config", None,
                                                  "Experiment config (configs/*.py); optional."),
        "workdir": flags.DEFINE_string("workdir", None, "Workdir of a trained experiment."),
        "items": flags.DEFINE_string("items", "", "Comma-separated raw item ids, oldest first."),
        "user": flags.DEFINE_string("user", "", "Raw id of a user in the dataset."),
        "mode": flags.DEFINE_enum("mode", "direct", ["direct", "reasoning"], "Recommendation mode."),
        "top_k": flags.DEFINE_integer("top_k", 10, "Items to print."),
    }


_FLAGS: dict = {}


def history_from_args(items: str, user: str, data, split, max_history: int) -> np.ndarray:
    if bool(items) == bool(user):
        raise ValueError("give exactly one of --items=ID,ID,... or --user=ID")
    if user:
        try:
            u = data.user_ids.index(user)
        except ValueError:
            raise ValueError(f"--user: unknown user id {user!r}") from None
        return split.full_sequence(u)[-max_history:]
    index = {raw: i for i, raw in enumerate(data.item_ids)}
    out = []
    for raw in (s.strip() for s in items.split(",")):
        if raw not in index:
            raise ValueError(f"--items: unknown item id {raw!r}")
        out.append(index[raw])
    return np.asarray(out[-max_history:], np.int32)


def format_recommendations(history, items, scores, data, mode: str, texts=None) -> str:
    title = lambda i: data.items[int(i)].title or "(no title)"
    lines = [f"History ({len(history)} items, oldest first):"]
    lines += [f"  - {data.item_ids[int(i)]}  {title(i)}" for i in history]
    for j, text in enumerate(texts or []):
        lines.append(f"Reasoning (chain {j + 1}):\n  {text.strip()}")
    lines.append(f"Top-{int((items >= 0).sum())} ({mode} mode):")
    for r, (i, s) in enumerate(zip(items, scores), start=1):
        if i >= 0:
            lines.append(f"  {r:2d}. {data.item_ids[int(i)]:>10}  {title(i)}  (log-prob {s:.3f})")
    return "\n".join(lines)


def main_with_args(*, workdir: str, items: str, user: str, mode: str, top_k: int, config=None) -> str:
    from gream_jax import mesh as mesh_lib
    from gream_jax.config_defaults import base_config, validate_config
    from gream_jax.data.prepare import load_prepared
    from gream_jax.eval.stage import load_trie, model_directory
    from gream_jax.index.sid import SemanticIds
    from gream_jax.infer.recommender import check_sid_softmax, recommend_direct, recommend_reasoning
    from gream_jax.model.store import load_model

    config = copy.deepcopy(config) if config is not None else base_config()
    config.unlock()
    config.eval.top_k = int(top_k)
    config.eval.beam_size = max(int(config.eval.beam_size), int(top_k))
    config.eval.ks = tuple(k for k in config.eval.ks if k <= top_k) or (int(top_k),)
    config.eval.max_batch = mesh_lib.data_parallel_size(mesh_lib.make_mesh(config.mesh))
    if config.eval.item_head_weights and mode == "direct":
        # A sweep is chosen on validation by the eval stage: use the weight it chose for this model.
        from gream_jax.eval.head_weight import chosen_weight
        config.eval.item_head_weight = chosen_weight(workdir, model_directory(config, workdir))
        config.eval.item_head_weights = ()
    validate_config(config)
    data, split = load_prepared(workdir)
    history = history_from_args(items, user, data, split, int(config.data.max_history))
    mesh = mesh_lib.make_mesh(config.mesh)
    sids = SemanticIds.load(os.path.join(workdir, "index"), n_items=data.n_items, item_ids=data.item_ids)
    trie = load_trie(os.path.join(workdir, "index"), sids)
    model_dir = model_directory(config, workdir)
    model_cfg, params, tokenizer, meta = load_model(model_dir, mesh, mesh_lib.rules_from_config(config.mesh))
    config.model.sid_softmax = str(meta.get("sid_softmax", "vocab"))   # decode as it was trained
    check_sid_softmax(config, meta, model_dir)    # e.g. an item-head re-ranking the model never learnt
    if mode == "direct":
        res = recommend_direct(params, model_cfg, tokenizer, sids, trie, [history], config, mesh)
        text = format_recommendations(history, res.items[0], res.scores[0], data, mode)
    elif mode == "reasoning":
        res = recommend_reasoning(params, model_cfg, tokenizer, sids, trie, [history], config, mesh)
        text = format_recommendations(history, res.items[0], res.scores[0], data, mode, texts=res.texts[0])
    else:
        raise ValueError(f"--mode={mode!r}: expected 'direct' or 'reasoning'")
    print(text, flush=True)
    return text


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    values = {name: holder.value for name, holder in _FLAGS.items()}
    if not values["workdir"]:
        raise app.UsageError("--workdir is required")
    main_with_args(**values)


if __name__ == "__main__":
    _FLAGS.update(_define_flags())
    from gream_jax.utils.cli import run_cli
    run_cli(app.run, main)
