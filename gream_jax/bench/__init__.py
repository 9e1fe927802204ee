"""JAX-vs-PyTorch throughput benchmark (`python -m gream_jax.bench`) and the AOT compile check
(`python -m gream_jax.bench.aot`); see __main__.py and docs/benchmarks.md."""
