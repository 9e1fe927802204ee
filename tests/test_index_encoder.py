"""Flax MiniLM matches the PyTorch reference (transformers BertModel) on the same files."""

import numpy as np
import pytest

from gream_jax.index import encoder as enc

TEXTS = ["Title: Toy Story (1995). Categories: Animation, Children's, Comedy",
         "Title: Heat (1995). Categories: Action, Crime, Thriller",
         "",                                            # empty item text must not crash
         "a " * 300]                                    # longer than max_tokens: truncated


@pytest.fixture(scope="module")
def encoder():
    return enc.SentenceEncoder(max_tokens=128, batch_size=4)


def test_parity_with_transformers(encoder):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.BertModel.from_pretrained(encoder.model_dir, local_files_only=True).eval()
    ids = encoder.tokenize(TEXTS)
    tokens, mask = encoder.pad_batch(ids)
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor(tokens, dtype=torch.long),
                       attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()
    m = mask[..., None].astype(np.float32)
    ref = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    ours = encoder.encode(TEXTS)
    np.testing.assert_allclose(ours, ref[:len(TEXTS)], atol=1e-4)
    # raw hidden states agree too (not only after pooling)
    ours_hidden = np.asarray(encoder._hidden(encoder.params, tokens, mask))
    np.testing.assert_allclose(ours_hidden * m, hidden * m, atol=1e-4)


def test_unit_norm_and_semantics(encoder):
    e = encoder.encode(["a comedy film for children", "a funny kids movie", "industrial steel bolts"])
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2


def test_missing_files_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        enc.SentenceEncoder(model_dir=str(tmp_path))
