"""Item text fusion: one description per item from its fields, within a length budget.

Why: the embedding, and so the semantic ID, can only be as good as the text it sees. Fields are
joined in order of how much they identify the item (title, brand, categories/genres,
description, then the most salient review sentences), labelled so the encoder knows which is
which, and trimmed to a character budget from the least important field backwards. Review
sentences are ranked by TF-IDF salience (sum of the sentence's TF-IDF weights / sqrt(#terms),
fitted over all items' review sentences) so generic sentences ("great product!") lose to
specific ones without favouring mere length. Empty
or missing fields are skipped; an item with no text at all gets "" (the encoder turns that into
a [CLS][SEP] embedding rather than crashing), and `empty_items` lets the caller report them.
"""

from __future__ import annotations

import re

import numpy as np

FIELD_LABELS = {"title": "Title", "brand": "Brand", "categories": "Categories",
                "description": "Description", "reviews": "Reviews"}
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
_MIN_REVIEW_SENTENCE_CHARS = 20


def _clean(text) -> str:
    return " ".join(str(text or "").split())


def review_sentences(reviews) -> list[str]:
    """Review sentences of at least 20 characters (shorter ones carry almost no signal)."""
    out = []
    for review in reviews or []:
        for s in _SENTENCE_SPLIT.split(_clean(review)):
            if len(s) >= _MIN_REVIEW_SENTENCE_CHARS:
                out.append(s)
    return out


def salient_review_sentences(items, per_item: int) -> list[list[str]]:
    """Top `per_item` review sentences of each item by TF-IDF salience, in original order."""
    per_item_sentences = [review_sentences(getattr(it, "reviews", [])) for it in items]
    flat = [s for sents in per_item_sentences for s in sents]
    if per_item <= 0 or not flat:
        return [[] for _ in items]
    from sklearn.feature_extraction.text import TfidfVectorizer
    vec = TfidfVectorizer(stop_words="english", sublinear_tf=True, norm=None)
    try:
        weights = vec.fit_transform(flat)
    except ValueError:          # only stop words everywhere: nothing is salient
        return [sents[:per_item] for sents in per_item_sentences]
    nnz = np.diff(weights.indptr)
    score = np.asarray(weights.sum(axis=1)).reshape(-1) / np.sqrt(np.maximum(nnz, 1))
    out, start = [], 0
    for sents in per_item_sentences:
        s = score[start:start + len(sents)]
        keep = sorted(np.argsort(-s, kind="stable")[:per_item].tolist())
        out.append([sents[i] for i in keep])
        start += len(sents)
    return out


def _truncate_words(text: str, budget: int) -> str:
    if len(text) <= budget:
        return text
    cut = text[:budget]
    space = cut.rfind(" ")
    return (cut[:space] if space > budget // 2 else cut).rstrip(" ,;:") + "..."


def fuse_item_text(fields: dict[str, str], field_order, max_chars: int) -> str:
    """Labelled fields joined in `field_order`, keeping earlier fields whole when over budget."""
    parts = []
    remaining = max_chars
    for name in field_order:
        value = _clean(fields.get(name, ""))
        if not value:
            continue
        label = FIELD_LABELS.get(name, name.capitalize())
        piece = f"{label}: {value}"
        sep = 1 if parts else 0
        if remaining - sep <= len(label) + 6:
            break
        if len(piece) + sep > remaining:
            piece = _truncate_words(piece, remaining - sep - 3)
        parts.append(piece)
        remaining -= len(piece) + sep
    return " ".join(parts)


def item_texts(items, field_order=("title", "brand", "categories", "description", "reviews"),
               max_chars: int = 512, review_sentences_per_item: int = 3) -> list[str]:
    """One fused description per item (`items`: sequence of ItemText-like objects)."""
    unknown = [f for f in field_order if f not in FIELD_LABELS]
    if unknown:
        raise ValueError(f"config.index.text_fields: unknown fields {unknown}; known: {list(FIELD_LABELS)}")
    reviews = (salient_review_sentences(items, review_sentences_per_item)
               if "reviews" in field_order else [[] for _ in items])
    texts = []
    for item, sents in zip(items, reviews):
        fields = {name: getattr(item, name, "") or "" for name in FIELD_LABELS if name != "reviews"}
        fields["reviews"] = " ".join(sents)
        texts.append(fuse_item_text(fields, field_order, max_chars))
    return texts


def empty_items(texts: list[str]) -> np.ndarray:
    """Indices of items whose fused text is empty."""
    return np.asarray([i for i, t in enumerate(texts) if not t.strip()], np.int64)
