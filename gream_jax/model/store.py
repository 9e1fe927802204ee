"""Model directories written and read by gream_jax stages (WORKDIR/sft/final, WORKDIR/rl/final).

Layout (written atomically, see files.atomic_directory):
    params/            orbax checkpoint of the params pytree (restored straight into shardings)
    model_config.json  ModelConfig.to_dict()
    tokenizer/         Tokenizer.save
    meta.json          caller's extra_meta (stage, step, metrics, ...)
For a transformers-loadable copy use `hf_export.export_hf`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from gream_jax import mesh as mesh_lib
from gream_jax.model import api
from gream_jax.model.config import ModelConfig
from gream_jax.model.files import atomic_directory
from gream_jax.model.tokenizer import Tokenizer
from gream_jax.utils import io


def save_model(directory: str, params, model_cfg: ModelConfig, tokenizer: Tokenizer,
               extra_meta: dict[str, Any] | None = None) -> str:
    with atomic_directory(directory) as tmp:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(os.path.join(tmp, "params"), params)
        checkpointer.wait_until_finished()
        checkpointer.close()
        if jax.process_index() == 0:
            io.write_json(os.path.join(tmp, "model_config.json"), model_cfg.to_dict())
            tokenizer.save(os.path.join(tmp, "tokenizer"))
            io.write_json(os.path.join(tmp, "meta.json"), dict(extra_meta or {}))
    return directory


def load_model(directory: str, mesh=None, rules=None):
    """-> (model_cfg, params, tokenizer, meta). Params are restored into the shardings the
    mesh rules give (`rules`, else the saved config's); mesh defaults to all devices on `data`."""
    for name in ("model_config.json", "params", "tokenizer"):
        if not os.path.exists(os.path.join(directory, name)):
            raise FileNotFoundError(f"{directory}: missing {name} (not a gream_jax model directory; "
                                    "HF directories load with hf_loader.load_hf_checkpoint)")
    model_cfg = ModelConfig.from_dict(io.read_json(os.path.join(directory, "model_config.json")))
    if rules is not None and tuple(rules) != tuple(mesh_lib.DEFAULT_RULES):
        model_cfg = model_cfg.replace(sharding_rules=tuple(rules))
    if mesh is None:
        mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    shardings = api.param_shardings(model_cfg, mesh, rules)
    target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          api.param_shapes(model_cfg), shardings)
    checkpointer = ocp.StandardCheckpointer()
    params = checkpointer.restore(os.path.join(os.path.abspath(directory), "params"), target)
    checkpointer.close()
    tokenizer = Tokenizer.load(os.path.join(directory, "tokenizer"))
    meta_path = os.path.join(directory, "meta.json")
    meta = io.read_json(meta_path) if os.path.exists(meta_path) else {}
    return model_cfg, params, tokenizer, meta
