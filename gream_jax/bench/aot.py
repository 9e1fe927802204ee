"""Ahead-of-time compile check of the sharded SFT train step, with no weights in memory.

`jax.jit(train_step).lower(abstract state and batch with their shardings).compile()` proves that
a backbone config (e.g. configs/qwen3_4b.py) compiles on a given mesh and reports XLA's per-device
memory estimate before anyone books a pod slice. Runs on fake CPU devices too:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
        python -m gream_jax.bench.aot --config=configs/qwen3_4b.py

Only abstract values (`jax.ShapeDtypeStruct` with a sharding) are used: nothing is allocated.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import jax
import jax.numpy as jnp
import numpy as np

from gream_jax import mesh as mesh_lib

MODEL_FIELDS = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
                "intermediate_size", "rope_theta", "rms_norm_eps", "tie_word_embeddings",
                "max_position_embeddings", "param_dtype", "dtype", "remat", "scan_layers", "attention")


def load_config_file(spec: str):
    """'configs/qwen3_4b.py[:arg]' -> (config, module); the module may define HF_SHAPE."""
    path, _, arg = spec.partition(":")
    s = importlib.util.spec_from_file_location("gream_aot_config", path)
    module = importlib.util.module_from_spec(s)
    s.loader.exec_module(module)
    return module.get_config(arg or None), module


def model_config_from(config, vocab_size: int):
    from gream_jax.model.config import ModelConfig
    fields = {f: config.model[f] for f in MODEL_FIELDS}
    return ModelConfig(vocab_size=vocab_size, architecture="qwen3",
                       sharding_rules=mesh_lib.rules_from_config(config.mesh), **fields)


def abstract_state(model_cfg, optimizer, mesh, rules) -> dict:
    """The train state as ShapeDtypeStructs carrying the shardings `sft.init_state` gives."""
    from gream_jax.model import api
    from gream_jax.train import sft
    shapes = api.param_shapes(model_cfg)
    shardings = api.param_shardings(model_cfg, mesh, rules)
    params = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          shapes, shardings)
    opt_abstract = jax.eval_shape(optimizer.init, params)
    opt_state = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                             opt_abstract, sft.opt_state_shardings(optimizer, params, mesh))
    rep = mesh_lib.replicated(mesh)
    key_data = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
    return {"params": params, "opt_state": opt_state,
            "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=rep),
            "rng": jax.ShapeDtypeStruct(key_data.shape, key_data.dtype, sharding=rep)}


def per_device_bytes(tree) -> int:
    """Bytes one device holds of `tree` (the largest shard of each leaf)."""
    total = 0
    for x in jax.tree.leaves(tree):
        total += int(np.prod(x.sharding.shard_shape(x.shape))) * np.dtype(x.dtype).itemsize
    return total


def total_bytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def compile_train_step(config, vocab_size: int, rows: int | None = None, seq: int | None = None,
                       mesh=None) -> dict:
    """Lowers and compiles gream_jax.train.sft's jitted step for `config`; returns a report.

    rows x seq is one micro-batch (default: the config's batch_size / grad_accum x seq_len)."""
    from gream_jax.model import api
    from gream_jax.train import sft
    mesh = mesh if mesh is not None else mesh_lib.make_mesh(config.mesh)
    rules = mesh_lib.rules_from_config(config.mesh)
    model_cfg = model_config_from(config, vocab_size)
    rows = rows or config.train.batch_size // config.train.grad_accum
    seq = seq or config.train.seq_len
    optimizer = sft.make_optimizer(config.train)
    step_fn = sft.make_train_step(
        lambda p, t, a, pos, seg: api.forward(p, model_cfg, t, a, pos, seg), optimizer,
        sft.learning_rate_schedule(config.train), compute_dtype=config.train.compute_dtype)
    state = abstract_state(model_cfg, optimizer, mesh, rules)
    batch_sharding = sft.batch_sharding(mesh, rules)
    batch = {k: jax.ShapeDtypeStruct((1, rows, seq), jnp.int32, sharding=batch_sharding)
             for k in sft.BATCH_KEYS}
    t0 = time.perf_counter()
    with jax.set_mesh(mesh):
        lowered = sft.jit_train_step(step_fn, state, mesh, rules).lower(state, batch)
        t_lower = time.perf_counter() - t0
        compiled = lowered.compile()
    t_compile = time.perf_counter() - t0 - t_lower
    mem = compiled.memory_analysis()
    report = {"mesh": dict(mesh.shape), "micro_batch": [rows, seq], "lower_s": t_lower,
              "compile_s": t_compile, "n_params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"])),
              "state_bytes_total": total_bytes(state), "state_bytes_per_device": per_device_bytes(state)}
    if mem is not None:
        report.update(argument_bytes=mem.argument_size_in_bytes, output_bytes=mem.output_size_in_bytes,
                      alias_bytes=mem.alias_size_in_bytes, temp_bytes=mem.temp_size_in_bytes,
                      peak_estimate_bytes=(mem.argument_size_in_bytes + mem.output_size_in_bytes
                                           - mem.alias_size_in_bytes + mem.temp_size_in_bytes))
    return report


def format_report(report: dict) -> str:
    gib = lambda b: f"{b / 2**30:.2f} GiB"
    lines = [f"mesh {report['mesh']}, micro-batch {report['micro_batch'][0]} x {report['micro_batch'][1]}, "
             f"{report['n_params'] / 1e9:.2f} B params; lowered in {report['lower_s']:.1f} s, "
             f"compiled in {report['compile_s']:.1f} s",
             f"train state: {gib(report['state_bytes_total'])} in total, "
             f"{gib(report['state_bytes_per_device'])} per device"]
    if "temp_bytes" in report:
        lines.append(f"XLA per-device estimate: arguments {gib(report['argument_bytes'])}, temporaries "
                     f"{gib(report['temp_bytes'])}, outputs aliased to donated inputs "
                     f"{gib(report['alias_bytes'])} -> peak ~ {gib(report['peak_estimate_bytes'])}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="config file, e.g. configs/qwen3_4b.py[:beauty]")
    p.add_argument("--vocab_size", type=int, default=0, help="default: the config's HF_SHAPE vocab")
    p.add_argument("--rows", type=int, default=0)
    p.add_argument("--seq", type=int, default=0)
    args = p.parse_args(argv)
    config, module = load_config_file(args.config)
    vocab = args.vocab_size or getattr(module, "HF_SHAPE", {}).get("vocab_size", 0)
    if not vocab:
        raise SystemExit(f"--vocab_size is required: {args.config} has no HF_SHAPE")
    print(format_report(compile_train_step(config, vocab, args.rows or None, args.seq or None)))


if __name__ == "__main__":
    main()
