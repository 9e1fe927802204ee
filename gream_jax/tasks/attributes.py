"""Item attributes derived from item text: what grounded reasoning and queries talk about.

Attributes are short lowercase strings: each category/genre, the brand, and for titles with a
year ("Toy Story (1995)") the decade. They are facts read from the data, never invented.
"""

from __future__ import annotations

import re

_YEAR = re.compile(r"\((\d{4})\)\s*$")
_RELEASED = re.compile(r"\b(?:released|published)\s+(?:in\s+)?(\d{4})\b", re.IGNORECASE)
_SPLIT = re.compile(r"\s*(?:[,|;>]|\s/\s)\s*")
_GENERIC = {"", "unknown", "beauty", "all beauty", "(no genres listed)"}


def item_attributes(item_text) -> list[str]:
    """Ordered, de-duplicated attributes of one `ItemText` (categories, brand, decade)."""
    out: list[str] = []
    for part in _SPLIT.split(item_text.categories or ""):
        part = part.strip().lower()
        if part not in _GENERIC and part not in out and len(part) <= 40:
            out.append(part)
    brand = (item_text.brand or "").strip().lower()
    if brand and brand not in _GENERIC and f"by {brand}" not in out:
        out.append(f"by {brand}")
    m = _YEAR.search(item_text.title or "") or _RELEASED.search(item_text.description or "")
    if m:
        out.append(f"{m.group(1)[:3]}0s")
    return out


def short_title(item_text, max_chars: int = 80) -> str:
    title = " ".join((item_text.title or "").split())
    return title if len(title) <= max_chars else title[: max_chars - 3].rstrip() + "..."


def short_description(item_text, max_chars: int = 160) -> str:
    text = " ".join((item_text.description or "").split())
    return text if len(text) <= max_chars else text[: max_chars - 3].rstrip() + "..."


def all_item_attributes(items) -> list[list[str]]:
    return [item_attributes(t) for t in items]
