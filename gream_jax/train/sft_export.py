"""The `export` stage: any saved SFT update as a model directory the eval and rl stages load.

The SFT stage exports the update its validation rule picks (`WORKDIR/sft/final`). A researcher
comparing updates (a selection rule on a noisy validation subset can pick the wrong one;
docs/results.md "session 9") needs the others too, exported the same way: the weights that are
validated (the EMA copy when `config.train.ema_decay > 0`), the run's model config and tokenizer,
and a `meta.json` the eval stage checks. Run it with the SFT run's own config:

    python -m gream_jax.main --config=configs/beauty.py --workdir=W --config.stage=export \\
        --config.train.export_step=600
    python -m gream_jax.main --config=configs/beauty.py --workdir=W --config.stage=eval \\
        --config.eval.checkpoint=W/sft/step_600

Keep the updates with `config.train.keep_checkpoints` (the latest N) while training; the best
update is also kept in `WORKDIR/sft/best`.
"""

from __future__ import annotations

import json
import os

from absl import logging

from gream_jax.train import ema as ema_lib
from gream_jax.train.checkpoint import Checkpointer


def saved_updates(stage_dir: str) -> dict:
    """{update: "checkpoints" | "best"} for every SFT state saved under stage_dir."""
    found = {}
    for kind in ("best", "checkpoints"):                 # a step in both: the latest-N copy wins
        directory = os.path.join(stage_dir, kind)
        if os.path.isdir(directory):
            for name in os.listdir(directory):
                if name.isdigit() and os.path.isdir(os.path.join(directory, name)):
                    found[int(name)] = kind
    return dict(sorted(found.items()))


def _valid_figures(stage_dir: str, step: int) -> dict:
    """The validation figures logged at that update (metrics.jsonl), {} when none were."""
    path = os.path.join(stage_dir, "metrics.jsonl")
    figures = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for row in map(json.loads, f):
                if int(row.get("step", -1)) == step:
                    figures.update({k[len("valid/"):]: v for k, v in row.items() if k.startswith("valid/")})
    return figures


def restore_update(config, stage_dir: str, inputs, step: int):
    """(params to export, checkpoint meta) of SFT update `step`, laid out like a fresh run's state.

    An update that was not kept, or a config whose model shapes differ from the checkpoint's,
    is an error naming the directory (and the saved updates)."""
    from gream_jax.train.sft_stage import initial_state
    saved = saved_updates(stage_dir)
    if step not in saved:
        raise FileNotFoundError(f"{stage_dir}: no saved SFT update {step} (config.train.export_step); saved: "
                                f"{list(saved) or 'none'} (raise config.train.keep_checkpoints to keep more)")
    _, template = initial_state(config, inputs.params, inputs.mesh)
    ckpt = Checkpointer(stage_dir, keep=max(len(saved), 1), async_save=False)
    try:
        manager = ckpt.best if saved[step] == "best" else ckpt.latest
        try:
            restored = ckpt.restore(template, step=step, best=manager is ckpt.best)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{manager.directory}/{step}: does not match this config's model and optimizer "
                             f"state (run export with the SFT run's own config): {e}") from e
    finally:
        ckpt.close()
    state, meta = restored
    return ema_lib.eval_params(state), meta


def run_export(config, workdir: str) -> dict:
    from gream_jax.train.sft_stage import export_meta, export_model, load_inputs
    stage_dir = os.path.join(workdir, "sft")
    step = int(config.train.export_step)
    inputs = load_inputs(config, workdir)
    params, _ = restore_update(config, stage_dir, inputs, step)
    out = config.train.export_dir or os.path.join(stage_dir, f"step_{step}")
    valid = _valid_figures(stage_dir, step)
    export_model(out, params, inputs.model_cfg, inputs.tokenizer, export_meta(config, step, valid))
    logging.info("[export] SFT update %d -> %s (validation logged then: %s)", step, out, valid or "none")
    return {"step": step, "model": out, "valid": valid}
