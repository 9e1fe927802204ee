"""Command-line entry point: `python -m gream_jax.main --config=configs/ml100k.py --workdir=DIR`.

Thin by design (big_vision style): parse flags, validate the config, set up devices,
dispatch to the stage functions, each of which lives in its stage's package and takes
`(config, workdir)`. `--config.stage=all` runs prepare -> index -> sft -> rl -> eval.
"""

from __future__ import annotations

import importlib
import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for all outputs of this experiment.")
flags.mark_flags_as_required(["config", "workdir"])

# stage -> "module:function"; each function has the signature f(config, workdir) -> dict.
STAGE_FUNCTIONS = {
    "prepare": "gream_jax.data.prepare:run_prepare",
    "index": "gream_jax.index.stage:run_index",
    "sft": "gream_jax.train.sft_stage:run_sft",
    "rl": "gream_jax.train.srpo_stage:run_rl",
    "eval": "gream_jax.eval.stage:run_eval",
    "export": "gream_jax.train.sft_export:run_export",   # a saved SFT update -> a model directory
}
PIPELINE = ("prepare", "index", "sft", "rl", "eval")


def stage_function(stage: str):
    module, fn = STAGE_FUNCTIONS[stage].split(":")
    return getattr(importlib.import_module(module), fn)


def run(config, workdir: str) -> dict:
    """Runs `config.stage` (or the whole pipeline) and returns each stage's summary."""
    from gream_jax import mesh as mesh_lib
    from gream_jax.config_defaults import validate_config

    mesh_lib.maybe_initialize_distributed()
    validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    stages = PIPELINE if config.stage == "all" else (config.stage,)
    summaries = {}
    for stage in stages:
        logging.info("=== stage %s (%s) ===", stage, config.name)
        summaries[stage] = stage_function(stage)(config, workdir)
    return summaries


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    from gream_jax.utils.cli import run_cli
    run_cli(app.run, main)
