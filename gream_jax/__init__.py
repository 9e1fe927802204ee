"""gream_jax: a JAX/Flax reimplementation of GREAM (Generative Reasoning Recommendation via LLMs)."""

__version__ = "0.1.0"
