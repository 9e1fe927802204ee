"""Sharded loading of a Hugging Face Qwen2/Qwen3 directory straight into NamedShardings.

Every JAX weight is built with `jax.make_array_from_callback`: for each addressable shard
the callback reads only that shard's slice of the HF tensor(s) from the safetensors files
(`safe_open(...).get_slice`), so a host never materialises weights its devices do not hold
and there is no replicated host copy of the model. The name map and per-key transforms come
from `hf_names.tensor_rules`; any missing shard file, missing/unexpected tensor or shape
mismatch raises `CheckpointError` naming the tensor and the file.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from safetensors import safe_open

from gream_jax.model import api
from gream_jax.model.config import ModelConfig
from gream_jax.model.hf_config import model_config_from_hf
from gream_jax.model.hf_names import (IGNORED_HF_SUFFIXES, TensorRule, get_path, set_path,
                                      tensor_rules)
from gream_jax.model.lora import init_lora_leaves

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint directory that does not match its config (names the tensor and file)."""


def read_hf_config(path: str, **overrides) -> ModelConfig:
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path, encoding="utf-8") as f:
            hf = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{config_path}: not found (is {path!r} a Hugging Face model directory?)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_path}:{e.lineno}: invalid JSON: {e.msg}") from None
    return model_config_from_hf(hf, where=config_path, **overrides)


def weight_map(path: str) -> dict[str, str]:
    """HF tensor name -> safetensors file (absolute), checking every listed shard exists."""
    index_path = os.path.join(path, INDEX_FILE)
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as f:
            mapping = json.load(f).get("weight_map")
        if not isinstance(mapping, dict) or not mapping:
            raise CheckpointError(f"{index_path}: has no weight_map")
        out = {}
        for name, file in mapping.items():
            full = os.path.join(path, file)
            if not os.path.exists(full):
                raise CheckpointError(f"{index_path}: shard {file!r} (holding tensor {name!r}) is missing "
                                      f"from {path}")
            out[name] = full
        return out
    files = ([os.path.join(path, SINGLE_FILE)] if os.path.exists(os.path.join(path, SINGLE_FILE))
             else sorted(glob.glob(os.path.join(path, "*.safetensors"))))
    if not files:
        raise CheckpointError(f"{path}: no {INDEX_FILE}, {SINGLE_FILE} or *.safetensors files")
    out = {}
    for file in files:
        with safe_open(file, framework="np") as f:
            for name in f.keys():
                out[name] = file
    return out


class _Reader:
    """Lazily opened safetensors files; reads slices as numpy (bfloat16 via ml_dtypes)."""

    def __init__(self, stack: contextlib.ExitStack):
        self._stack, self._np, self._flax = stack, {}, {}

    def _handle(self, file: str, framework: str):
        table = self._np if framework == "np" else self._flax
        if file not in table:
            table[file] = self._stack.enter_context(safe_open(file, framework=framework))
        return table[file]

    def shape_dtype(self, file: str, name: str):
        s = self._handle(file, "np").get_slice(name)
        return tuple(s.get_shape()), s.get_dtype()

    def read(self, file: str, name: str, slices) -> np.ndarray:
        _, dtype = self.shape_dtype(file, name)
        if dtype in ("BF16", "F8_E4M3", "F8_E5M2"):  # numpy has no such dtype: go through JAX on CPU
            with jax.default_device(jax.local_devices(backend="cpu")[0]):
                return np.asarray(self._handle(file, "flax").get_slice(name)[slices])
        return self._handle(file, "np").get_slice(name)[slices]


def _read_view_block(reader: _Reader, file: str, name: str, rule: TensorRule, hf_rows: list[int],
                     view_ranges: list[tuple[int, int]]) -> np.ndarray:
    """Reads the block of the HF tensor covering `view_ranges` and returns it in view layout."""
    hf_slices, inner = [], []
    k = 0
    for j, group in enumerate(rule.view):
        stride = int(np.prod(group[1:])) if len(group) > 1 else 1
        start, stop = view_ranges[k]
        hf_stop = min(stop * stride, hf_rows[j])
        hf_slices.append(slice(min(start * stride, hf_stop), hf_stop))
        inner.append((start, stop, group))
        k += len(group)
    block = reader.read(file, name, tuple(hf_slices))
    # Vocabulary padding: rows past the file's end are zeros.
    if rule.pad_dim is not None:
        want = view_ranges[rule.pad_dim][1] - view_ranges[rule.pad_dim][0]
        if block.shape[rule.pad_dim] < want:
            pad = [(0, 0)] * block.ndim
            pad[rule.pad_dim] = (0, want - block.shape[rule.pad_dim])
            block = np.pad(block, pad)
    shape, sub = [], []
    k = 0
    for j, (start, stop, group) in enumerate(inner):
        shape += [stop - start] + list(group[1:])
        sub += [slice(None)] + [slice(*view_ranges[k + i]) for i in range(1, len(group))]
        k += len(group)
    return block.reshape(shape)[tuple(sub)]


def _build_array(reader, rule: TensorRule, files: list[str], names: list[str], hf_rows: list[int],
                 shape, dtype, sharding) -> jax.Array:
    n_lead = 1 if rule.per_layer else 0
    inv = np.argsort(rule.perm)

    def callback(index):
        ranges = [s.indices(dim)[:2] for s, dim in zip(index, shape)]
        param_ranges = ranges[n_lead:]
        view_ranges = [param_ranges[inv[v]] for v in range(len(rule.perm))]
        layers = range(*ranges[0]) if rule.per_layer else [0]
        blocks = [np.transpose(_read_view_block(reader, files[l], names[l], rule, hf_rows, view_ranges),
                               rule.perm) for l in layers]
        out = np.stack(blocks) if rule.per_layer else blocks[0]
        return out.astype(dtype)

    return jax.make_array_from_callback(shape, sharding, callback)


def load_hf_checkpoint(path: str, mesh: Mesh, rules=None, vocab_pad_multiple: int = 1,
                       rng: jax.Array | None = None, **overrides) -> tuple[ModelConfig, dict[str, Any]]:
    """Loads `path` (config.json + safetensors) into sharded params -> (model_cfg, params).

    overrides: ModelConfig fields to set (param_dtype, dtype, remat, scan_layers, attention,
    lora_rank, lora_alpha, lora_targets, sharding_rules). The vocabulary is padded with zero
    rows to a multiple of `vocab_pad_multiple`. LoRA leaves (if lora_rank > 0) are freshly
    initialised from `rng` with B = 0, so the loaded model computes the checkpoint exactly.
    """
    cfg = read_hf_config(path, **overrides)
    cfg = cfg.replace(vocab_size=-(-cfg.vocab_size // vocab_pad_multiple) * vocab_pad_multiple)
    return cfg, load_hf_params(path, cfg, mesh, rules, rng)


def load_hf_params(path: str, model_cfg: ModelConfig, mesh: Mesh, rules=None,
                   rng: jax.Array | None = None) -> dict[str, Any]:
    """Loads the safetensors weights of `path` into params for `model_cfg` (whose architecture
    must match the files; the vocabulary may be padded beyond the file's rows)."""
    cfg = model_cfg
    names_to_files = weight_map(path)
    shapes = api.param_shapes(cfg)
    shardings = api.param_shardings(cfg, mesh, rules)
    params: dict[str, Any] = {}
    used = set()
    with contextlib.ExitStack() as stack:
        reader = _Reader(stack)
        embed = "model.embed_tokens.weight"
        if embed not in names_to_files:
            raise CheckpointError(f"{path}: tensor {embed!r} is missing from every safetensors file")
        file_rows = reader.shape_dtype(names_to_files[embed], embed)[0][0]
        if file_rows > cfg.vocab_size:
            raise CheckpointError(f"{names_to_files[embed]}: tensor {embed!r} has {file_rows} rows but the "
                                  f"model config has vocab_size={cfg.vocab_size}")
        for rule in tensor_rules(cfg):
            names = rule.names(cfg.num_layers)
            hf_rows = list(rule.hf_shape)
            if rule.pad_dim is not None:
                hf_rows[rule.pad_dim] = file_rows
            files = []
            for name in names:
                if name not in names_to_files:
                    raise CheckpointError(f"{path}: tensor {name!r} is missing from every safetensors file "
                                          f"(needed for parameter {'/'.join(rule.param_path)})")
                file = names_to_files[name]
                got, _ = reader.shape_dtype(file, name)
                if tuple(got) != tuple(hf_rows):
                    raise CheckpointError(f"{file}: tensor {name!r} has shape {tuple(got)}, expected "
                                          f"{tuple(hf_rows)} for a model with {cfg.architecture} config "
                                          f"(see {path}/config.json)")
                files.append(file)
                used.add(name)
            leaf = get_path(shapes, rule.param_path)
            set_path(params, rule.param_path, _build_array(
                reader, rule, files, names, hf_rows, leaf.shape, leaf.dtype,
                get_path(shardings, rule.param_path)))
    tied_head = cfg.tie_word_embeddings and "lm_head.weight" in names_to_files
    unexpected = sorted(n for n in names_to_files if n not in used and not n.endswith(IGNORED_HF_SUFFIXES)
                        and not (tied_head and n == "lm_head.weight"))
    if unexpected:
        raise CheckpointError(f"{names_to_files[unexpected[0]]}: unexpected tensor {unexpected[0]!r} "
                              f"({len(unexpected)} unexpected in total) for a {cfg.architecture} model")
    if cfg.lora_rank:
        init_lora_leaves(params, shapes, shardings, rng if rng is not None else jax.random.PRNGKey(0))
    return params

