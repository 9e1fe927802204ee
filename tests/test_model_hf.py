"""Hugging Face parity: random tiny Qwen2/Qwen3 (tied/untied, GQA, sharded safetensors) loaded
into JAX give PyTorch's logits; export reloads in transformers; broken checkpoints fail clearly."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gream_jax import mesh as mesh_lib
from gream_jax.model import api
from gream_jax.model.hf_config import UnsupportedCheckpointError
from gream_jax.model.hf_export import export_hf
from gream_jax.model.hf_loader import CheckpointError, load_hf_checkpoint
from gream_jax.model.tiny_hf import write_tiny_hf_checkpoint
from gream_jax.model.tokenizer import Tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VARIANTS = [("qwen3", True), ("qwen3", False), ("qwen2", True), ("qwen2", False)]
FWD = jax.jit(api.forward, static_argnames=("model_cfg", "return_hidden"))
# Measured max |JAX - PyTorch| per variant, printed at the end of the run (-s) for the report.
MEASURED = {}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {(arch, tied): write_tiny_hf_checkpoint(str(root / f"{arch}_{'tied' if tied else 'untied'}"),
                                                   arch=arch, tied=tied, seed=len(arch) + tied)
            for arch, tied in VARIANTS}


@pytest.fixture(scope="module")
def mesh():
    return mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


def _padded_batch(vocab):
    rng = np.random.default_rng(1)
    tokens = rng.integers(1, vocab, size=(3, 9)).astype(np.int64)
    mask = np.ones((3, 9), np.int64)
    mask[1, :4] = 0          # left padded
    mask[2, 6:] = 0          # right padded
    tokens[mask == 0] = 0
    return tokens, mask


def _torch_logits(model, tokens, mask):
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
    with torch.no_grad():
        return model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(positions)).logits.float().numpy()


def _max_diff(a, b, mask):
    return float(np.abs(np.asarray(a) - np.asarray(b))[mask > 0].max())


@pytest.mark.parametrize("arch,tied", VARIANTS)
def test_sharded_checkpoint_logits_match_pytorch(checkpoints, mesh, arch, tied):
    path = checkpoints[(arch, tied)]
    assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
    assert len([f for f in os.listdir(path) if f.endswith(".safetensors")]) > 1
    cfg, params = load_hf_checkpoint(path, mesh)
    assert cfg.architecture == arch and cfg.tie_word_embeddings == tied
    assert cfg.num_kv_heads < cfg.num_heads
    assert ("lm_head" in params) == (not tied)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokens, mask = _padded_batch(cfg.vocab_size)
    ref = _torch_logits(model, tokens, mask)
    ours = FWD(params, cfg, jnp.asarray(tokens, jnp.int32), jnp.asarray(mask, jnp.int32))
    diff = _max_diff(ours, ref, mask)
    MEASURED[f"load {arch} {'tied' if tied else 'untied'}"] = diff
    print(f"\nmax |logits diff| {arch} tied={tied}: {diff:.3e}")
    assert diff <= 1e-4


@pytest.mark.parametrize("arch,tied", [("qwen3", True), ("qwen2", False)])
def test_export_round_trip_reloads_in_transformers(checkpoints, mesh, tmp_path, arch, tied):
    path = checkpoints[(arch, tied)]
    cfg, params = load_hf_checkpoint(path, mesh)
    tokenizer = Tokenizer.load(path)
    out = export_hf(params, cfg, tokenizer, str(tmp_path / "export"), max_shard_bytes=30_000)
    assert os.path.exists(os.path.join(out, "model.safetensors.index.json"))
    assert os.path.exists(os.path.join(out, "tokenizer.json"))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokens, mask = _padded_batch(cfg.vocab_size)
    ref = _torch_logits(reloaded, tokens, mask)
    ours = FWD(params, cfg, jnp.asarray(tokens, jnp.int32), jnp.asarray(mask, jnp.int32))
    diff = _max_diff(ours, ref, mask)
    MEASURED[f"export {arch} {'tied' if tied else 'untied'}"] = diff
    assert diff <= 1e-4
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "the quick brown fox"
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == tokenizer.encode(text)
    # JAX -> HF -> JAX is the identity on every weight.
    cfg2, params2 = load_hf_checkpoint(out, mesh)
    assert cfg2.replace(bos_token_id=-1) == cfg.replace(bos_token_id=-1)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2)


def test_bfloat16_files_and_params(checkpoints, mesh, tmp_path):
    path = checkpoints[("qwen3", False)]
    cfg, params = load_hf_checkpoint(path, mesh, param_dtype="bfloat16", dtype="bfloat16")
    assert params["embed_tokens"].dtype == jnp.bfloat16
    logits = FWD(params, cfg, jnp.ones((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32))
    assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
    # BF16 safetensors (what real Qwen checkpoints ship) read back bit-exactly.
    out = export_hf(params, cfg, Tokenizer.load(path), str(tmp_path / "bf16"), dtype="bfloat16")
    _, params2 = load_hf_checkpoint(out, mesh, param_dtype="bfloat16")
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2)


def test_vocabulary_padding_adds_zero_rows(checkpoints, mesh):
    path = checkpoints[("qwen3", False)]
    cfg, params = load_hf_checkpoint(path, mesh, vocab_pad_multiple=48)
    assert cfg.vocab_size == 336
    np.testing.assert_array_equal(np.asarray(params["embed_tokens"])[320:], 0)
    np.testing.assert_array_equal(np.asarray(params["lm_head"])[:, 320:], 0)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def test_missing_shard_names_the_file_and_tensor(checkpoints, mesh, tmp_path):
    path = _copy(checkpoints[("qwen3", True)], tmp_path / "broken")
    index = json.load(open(os.path.join(path, "model.safetensors.index.json")))
    victim = sorted(set(index["weight_map"].values()))[1]
    os.remove(os.path.join(path, victim))
    with pytest.raises(CheckpointError, match=f"shard '{victim}'.*tensor 'model"):
        load_hf_checkpoint(path, mesh)


def test_wrong_shape_names_the_file_and_tensor(checkpoints, mesh, tmp_path):
    path = _copy(checkpoints[("qwen3", True)], tmp_path / "broken")
    config = json.load(open(os.path.join(path, "config.json")))
    config["intermediate_size"] = 48
    json.dump(config, open(os.path.join(path, "config.json"), "w"))
    with pytest.raises(CheckpointError, match=r"model-\d+-of-\d+\.safetensors: tensor "
                                              r"'model\.layers\.0\.mlp\.\w+_proj\.weight' has shape"):
        load_hf_checkpoint(path, mesh)


def test_missing_tensor_is_named(checkpoints, mesh, tmp_path):
    path = _copy(checkpoints[("qwen2", False)], tmp_path / "broken")
    index_path = os.path.join(path, "model.safetensors.index.json")
    index = json.load(open(index_path))
    del index["weight_map"]["model.layers.1.self_attn.k_proj.bias"]
    json.dump(index, open(index_path, "w"))
    with pytest.raises(CheckpointError, match=r"'model\.layers\.1\.self_attn\.k_proj\.bias' is missing"):
        load_hf_checkpoint(path, mesh)


@pytest.mark.parametrize("field,value,message", [
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "rope_type='yarn'"),
    ("use_sliding_window", True, "sliding-window"),
    ("num_experts", 8, "mixture-of-experts"),
    ("model_type", "llama", "model_type='llama'"),
])
def test_unsupported_config_fields_are_refused(checkpoints, mesh, tmp_path, field, value, message):
    path = _copy(checkpoints[("qwen3", True)], tmp_path / "odd")
    config = json.load(open(os.path.join(path, "config.json")))
    config[field] = value
    json.dump(config, open(os.path.join(path, "config.json"), "w"))
    with pytest.raises(UnsupportedCheckpointError, match=message):
        load_hf_checkpoint(path, mesh)


def test_zz_report_measured_differences():
    """Prints every measured parity figure (run with -s); fails if a parity test did not run."""
    print("\nparity max |logits diff|:", json.dumps(MEASURED, indent=1))
    assert len(MEASURED) == len(VARIANTS) + 2
