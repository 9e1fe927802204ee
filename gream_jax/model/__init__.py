"""Qwen2/Qwen3 decoder (Flax Linen) with a functional API: see `api.py` and docs/DESIGN.md."""
