"""The processed Amazon format of LC-Rec's and GREAM's released data (see ../shared/data/README.md).

`<Name>.inter.json` = {"<user>": [item, ...] oldest first} (no timestamps: the list order is the
chronology) and `<Name>.item.json` = {"<item>": {"title", "description", "brand", "categories", ...}}.
The catalogue is every item of `.item.json`; internal ids follow the raw indices' numeric order, so
for the 0-based consecutive files shipped here internal id == file id (semantic IDs released for
these files, e.g. LETTER's for Beauty, then apply directly).
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from gream_jax.data.types import DataFormatError, InteractionData, ItemText, clean_text, sorted_raw_ids

TEXT_FIELDS = ("title", "description", "brand", "categories")


def processed_files(directory: str, prefix: str) -> tuple[str, str]:
    """(inter path, item path). An empty prefix means: the one `*.inter.json` in the directory."""
    if not prefix:
        found = sorted(glob.glob(os.path.join(directory, "*.inter.json")))
        if len(found) != 1:
            raise DataFormatError(directory, f"expected exactly one *.inter.json (set "
                                             f"config.data.file_prefix), found {len(found)}")
        prefix = os.path.basename(found[0])[:-len(".inter.json")]
    return (os.path.join(directory, f"{prefix}.inter.json"),
            os.path.join(directory, f"{prefix}.item.json"))


def _no_duplicate_keys(path):
    def hook(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise DataFormatError(path, "duplicate key", key=dup)
        return dict(pairs)
    return hook


def read_json_object(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f, object_pairs_hook=_no_duplicate_keys(path))
    except FileNotFoundError:
        raise DataFormatError(path, "file not found") from None
    except UnicodeDecodeError as e:
        raise DataFormatError(path, f"not UTF-8 ({e})") from None
    except json.JSONDecodeError as e:
        raise DataFormatError(path, f"invalid JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
    if not isinstance(obj, dict):
        raise DataFormatError(path, f"top level must be a JSON object, got {type(obj).__name__}")
    if not obj:
        raise DataFormatError(path, "empty object")
    return obj


def read_items(path: str) -> dict[str, ItemText]:
    texts = {}
    for key, record in read_json_object(path).items():
        if not isinstance(record, dict):
            raise DataFormatError(path, f"item record must be an object, got {type(record).__name__}", key=key)
        fields = {}
        for name in TEXT_FIELDS:
            if name not in record:
                raise DataFormatError(path, f"field {name!r} missing", key=key)
            if not isinstance(record[name], str):
                raise DataFormatError(path, f"field {name!r} must be a string (\"\" when unknown), "
                                            f"got {record[name]!r}", key=key)
            fields[name] = clean_text(record[name])
        texts[key] = ItemText(**fields)
    return texts


def load_amazon_processed(data_config) -> InteractionData:
    inter_path, item_path = processed_files(data_config.path, data_config.file_prefix)
    texts = read_items(item_path)
    inter = read_json_object(inter_path)
    item_ids = sorted_raw_ids(texts)
    item_map = {r: i for i, r in enumerate(item_ids)}
    user_ids = sorted_raw_ids(inter)
    sequences = []
    for user in user_ids:
        history = inter[user]
        if not isinstance(history, list):
            raise DataFormatError(inter_path, f"history must be a list, got {type(history).__name__}", key=user)
        if not history:
            raise DataFormatError(inter_path, "empty history", key=user)
        seq = np.empty(len(history), dtype=np.int32)
        for pos, item in enumerate(history):
            if isinstance(item, bool) or not isinstance(item, (int, str)):
                raise DataFormatError(inter_path, f"item at position {pos} must be an int id, "
                                                  f"got {item!r}", key=user)
            internal = item_map.get(str(item))
            if internal is None:
                raise DataFormatError(inter_path, f"item {item!r} at position {pos} is not in "
                                                  f"{os.path.basename(item_path)}", key=user)
            seq[pos] = internal
        sequences.append(seq)
    name = os.path.basename(inter_path)[:-len(".inter.json")]
    data = InteractionData(name=name, item_ids=item_ids, user_ids=user_ids,
                           items=[texts[r] for r in item_ids], sequences=sequences, source=inter_path)
    data.check()
    return data
