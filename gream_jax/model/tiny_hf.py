"""Random tiny Qwen2/Qwen3 Hugging Face checkpoints, made with transformers + PyTorch (CPU).

No weights can be downloaded here, so loading, export and parity are proven on these. Also a
CLI for the end-to-end check of `--config.model.checkpoint`:

    python -m gream_jax.model.tiny_hf --out /tmp/tiny_qwen3 --arch qwen3
"""

from __future__ import annotations

import argparse
import os

from gream_jax.model.tokenizer import train_small_tokenizer

_TEXT = ("a small random checkpoint for tests: the quick brown fox jumps over the lazy dog. "
         "users watch movies, rate items and write reviews; the model recommends the next item.")


def write_tiny_hf_checkpoint(out_dir: str, arch: str = "qwen3", tied: bool = True, layers: int = 2,
                             hidden: int = 32, heads: int = 4, kv_heads: int = 2, head_dim: int = 8,
                             intermediate: int = 64, vocab_size: int = 320, seed: int = 0,
                             max_shard_size: str | int = "20KB", tokenizer_vocab: int = 300) -> str:
    """Saves a randomly initialised `{Qwen2,Qwen3}ForCausalLM` (float32, several safetensors
    shards + index) and a small byte-level BPE tokenizer into `out_dir`."""
    import torch
    import transformers

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                  max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=tied,
                  rope_theta=10000.0, eos_token_id=0, pad_token_id=0, initializer_range=0.1)
    if arch == "qwen3":
        config = transformers.Qwen3Config(head_dim=head_dim, attention_bias=False, **common)
        model = transformers.Qwen3ForCausalLM(config)
    elif arch == "qwen2":
        if hidden // heads != head_dim:
            raise ValueError(f"qwen2 has head_dim = hidden/heads = {hidden // heads}, not {head_dim}")
        config = transformers.Qwen2Config(**common)
        model = transformers.Qwen2ForCausalLM(config)
    else:
        raise ValueError(f"arch={arch!r}: expected 'qwen2' or 'qwen3'")
    with torch.no_grad():  # norms and biases are 1/0 at init; randomise so parity tests see them
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(out_dir, max_shard_size=max_shard_size)
    tokenizer = train_small_tokenizer([_TEXT] * 4, vocab_size=min(tokenizer_vocab, vocab_size))
    tokenizer.save(out_dir)
    return out_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--arch", default="qwen3", choices=("qwen2", "qwen3"))
    parser.add_argument("--untied", action="store_true")
    args = parser.parse_args(argv)
    write_tiny_hf_checkpoint(args.out, arch=args.arch, tied=not args.untied)
    print(f"wrote {args.arch} checkpoint to {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
