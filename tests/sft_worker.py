"""Runs the real SFT loop (`gream_jax.train.sft_stage.train`) on the toy world with a tiny model.

Used by the preemption test as a subprocess: `python sft_worker.py STAGE_DIR OUT.npz [SLEEP_S]`.
SLEEP_S slows each batch fetch so the parent can SIGKILL the run between checkpoints.
"""

import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from sft_toy import tiny_config, tiny_inputs  # noqa: E402


def main(stage_dir, out_path, sleep_s=0.0):
    from gream_jax.train import batching
    from gream_jax.train.sft_stage import train
    if sleep_s:
        original = batching.PackedStream.next

        def slow_next(self):
            time.sleep(sleep_s)
            return original(self)
        batching.PackedStream.next = slow_next
    config = tiny_config(steps=16, checkpoint_every=4)
    summary, state, _, _ = train(config, stage_dir, tiny_inputs(config, jax.devices()[:1]), evaluate_test=False)
    leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(state["params"]))
    np.savez(out_path, **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
    print("DONE", summary["steps"], "resumed_from", summary["resumed_from"], flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
