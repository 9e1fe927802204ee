"""Text fusion: field order, budget, empty fields, TF-IDF review salience."""

from gream_jax.data.types import ItemText
from gream_jax.index import text


def test_fields_joined_and_empty_skipped():
    items = [ItemText(title="Lipstick", brand="", categories="Beauty, Makeup", description="Long lasting."),
             ItemText()]
    out = text.item_texts(items, max_chars=200)
    assert out[0] == "Title: Lipstick Categories: Beauty, Makeup Description: Long lasting."
    assert out[1] == ""
    assert text.empty_items(out).tolist() == [1]


def test_budget_trims_later_fields_first():
    item = ItemText(title="Short title", description="word " * 200)
    out = text.item_texts([item], max_chars=80)[0]
    assert out.startswith("Title: Short title Description: word")
    assert len(out) <= 80 and out.endswith("...")


def test_salient_review_sentences():
    items = [ItemText(title="a", reviews=["Great product for me. The zinc oxide sunscreen left no white cast at all.",
                                          "I love it so much!! Works nicely."]),
             ItemText(title="b", reviews=["Great product for me. Great product for me too."]),
             ItemText(title="c", reviews=[])]
    picked = text.salient_review_sentences(items, per_item=1)
    assert picked[0] == ["The zinc oxide sunscreen left no white cast at all."]
    assert len(picked[1]) == 1 and picked[2] == []
    fused = text.item_texts(items, max_chars=300, review_sentences_per_item=1)
    assert "Reviews: The zinc oxide" in fused[0]


def test_unknown_field_named():
    import pytest
    with pytest.raises(ValueError, match="config.index.text_fields"):
        text.item_texts([ItemText(title="x")], field_order=("title", "colour"))
