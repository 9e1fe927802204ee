"""Tokenizer: small BPE training, SID/task special tokens, SID table, save/load, vocab resize."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gream_jax import mesh as mesh_lib
from gream_jax.index.sid import SemanticIds
from gream_jax.model import api
from gream_jax.model.config import ModelConfig
from gream_jax.model.tokenizer import (CHAT_TOKENS, TASK_TOKENS, Tokenizer, TokenizerError,
                                       resize_vocab, sid_token_table, train_small_tokenizer)

TEXTS = ["Toy Story (1995) Animation Children's Comedy", "GoldenEye (1995) Action Adventure Thriller",
         "Four Rooms (1995) Thriller", "Get Shorty (1995) Action Comedy Drama"] * 3


def _sids():
    codes = np.array([[0, 1, 2, -1], [0, 1, 2, 0], [2, 0, 1, -1]], np.int32)
    return SemanticIds(codes=codes, lengths=np.array([3, 4, 3]), level_sizes=(3, 2, 3, 1))


@pytest.fixture()
def tokenizer():
    tok = train_small_tokenizer(TEXTS, vocab_size=300)
    tok.add_tokens(list(TASK_TOKENS))
    tok.add_tokens(_sids().all_tokens())
    return tok


def test_trained_tokenizer_round_trips_any_text(tokenizer):
    for text in ["Toy Story (1995)", "unseen wörds ✓ 123"]:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.pad_id == tokenizer.eos_id == tokenizer.token_to_id("<|endoftext|>")
    assert all(tokenizer.has_token(t) for t in CHAT_TOKENS)
    assert train_small_tokenizer(TEXTS, 300).encode("Toy Story") == \
        train_small_tokenizer(TEXTS, 300).encode("Toy Story")   # deterministic


def test_special_tokens_are_atomic(tokenizer):
    sids = _sids()
    text = "<think>because</think><answer>" + sids.item_string(1) + "</answer>"
    ids = tokenizer.encode(text)
    want = [tokenizer.token_to_id(t) for t in ["<answer>"] + sids.item_tokens(1) + ["</answer>"]]
    assert ids[-len(want):] == want
    assert tokenizer.decode(ids) == text
    assert tokenizer.add_tokens(["<think>", "<a_0>"]) == 0


def test_sid_token_table(tokenizer):
    sids = _sids()
    table = sid_token_table(tokenizer, sids)
    assert table.shape == (4, 3) and table.dtype == np.int32
    assert table[0, 2] == tokenizer.token_to_id("<a_2>")
    assert table[3, 0] == tokenizer.token_to_id("<d_0>") and table[3, 1] == -1 and table[1, 2] == -1
    assert len(set(table[table >= 0].tolist())) == sum(sids.level_sizes)
    fresh = train_small_tokenizer(TEXTS, 300)
    with pytest.raises(TokenizerError, match="<a_0>"):
        sid_token_table(fresh, sids)


def test_save_load_keeps_ids(tokenizer, tmp_path):
    tokenizer.save(str(tmp_path))
    again = Tokenizer.load(str(tmp_path))
    assert again.vocab_size == tokenizer.vocab_size
    assert again.encode("<a_1><b_0> GoldenEye") == tokenizer.encode("<a_1><b_0> GoldenEye")
    assert again.pad_token == tokenizer.pad_token
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        Tokenizer.load(str(tmp_path / "nowhere"))


def test_resize_vocab_initialises_new_rows_near_the_mean():
    cfg = ModelConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                      num_kv_heads=1, head_dim=8, tie_word_embeddings=False)
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    params = api.init_params(cfg, jax.random.PRNGKey(0), mesh)
    new, new_cfg = resize_vocab(params, cfg, 64, jax.random.PRNGKey(1), noise=0.02)
    assert new_cfg.vocab_size == 64 and new_cfg.resized_from_vocab_size == 40
    emb, old = np.asarray(new["embed_tokens"]), np.asarray(params["embed_tokens"])
    np.testing.assert_array_equal(emb[:40], old)
    mean, std = old.mean(0), old.std(0)
    assert np.abs(emb[40:] - mean).max() <= 0.02 * std.max() * 6
    assert np.abs(emb[40:] - mean).max() > 0                    # noise breaks the symmetry
    head = np.asarray(new["lm_head"])
    assert head.shape == (16, 64)
    np.testing.assert_allclose(head[:, 40:].mean(1), np.asarray(params["lm_head"]).mean(1), atol=0.01)
    assert new["embed_tokens"].sharding.spec == api.param_shardings(new_cfg, mesh)["embed_tokens"].spec
    logits = jax.jit(api.forward, static_argnames="model_cfg")(
        new, new_cfg, jnp.asarray([[63, 1]]), jnp.ones((1, 2), jnp.int32))
    assert logits.shape == (1, 2, 64)
    _, again = resize_vocab(new, new_cfg, 80, jax.random.PRNGKey(2))
    assert again.resized_from_vocab_size == 40
    with pytest.raises(ValueError, match="shrinking"):
        resize_vocab(params, cfg, 8, jax.random.PRNGKey(1))
