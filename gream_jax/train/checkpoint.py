"""Orbax checkpoints for SFT and SRPO: async, atomic, keep-N for resume plus best-by-validation.

Layout under a stage directory (e.g. WORKDIR/sft/):
  checkpoints/<step>/  latest `keep` full states (params, optimizer, step, RNG) + JSON meta
                       (iterator states, curriculum counters, best metric so far) for resuming;
  best/<step>/         the state with the best validation metric (one kept), for export.
Orbax writes into a temporary directory and renames it when complete, so a run killed mid-save
leaves the previous checkpoint intact; restores place every array in the sharding of the
template state, so a resumed state is laid out exactly like a fresh one.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


def _manager(directory: str, keep: int, async_save: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                           create=True, cleanup_tmp_directories=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def abstract_like(state):
    """ShapeDtypeStructs carrying each leaf's sharding: the restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


class Checkpointer:
    """Latest-N and best-1 orbax managers for one training stage."""

    def __init__(self, stage_dir: str, keep: int = 2, async_save: bool = True):
        self.latest = _manager(os.path.join(stage_dir, "checkpoints"), keep, async_save)
        self.best = _manager(os.path.join(stage_dir, "best"), 1, async_save)

    def save(self, step: int, state, meta: dict, force: bool = False) -> None:
        self.latest.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)

    def save_best(self, step: int, state, meta: dict) -> None:
        # The best manager keeps one: saving a new best deletes the previous one.
        self.best.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def best_step(self) -> int | None:
        return self.best.latest_step()

    def restore(self, template_state, step: int | None = None, best: bool = False):
        """(state, meta) from the latest (or given / best) checkpoint, laid out like `template_state`."""
        manager = self.best if best else self.latest
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{manager.directory}: no checkpoint to restore")
        out = manager.restore(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_like(template_state)), meta=ocp.args.JsonRestore()))
        return out["state"], dict(out["meta"])

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.latest.close()
        self.best.close()
