"""Optional LLM rewrite of item descriptions through an OpenAI-compatible chat endpoint.

The reference release rewrites each description with a hosted LLM from the title, the description
and up to 8 training-split reviews (>= 20 characters each), which gives the encoder cleaner text.
This module does the same against any OpenAI-compatible server (`config.index.llm_rewrite_url`,
e.g. a local vLLM / llama.cpp server): one POST to `<url>/chat/completions` per item, answers
cached in a JSONL file keyed by the request's hash (re-runs and crashes never pay twice),
retries with exponential backoff on network errors and 5xx/429, and a clear error naming the URL
when the server cannot be reached. Reviews come from the prepared data, which keeps only
training-interaction reviews, so no valid/test review leaks into the item text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import urllib.error
import urllib.request

from gream_jax.utils.logging import Progress

MAX_REVIEWS = 8
MIN_REVIEW_CHARS = 20
SYSTEM_PROMPT = ("You write short, factual product descriptions for a recommender system. Use only "
                 "the information given. Answer with the description only, at most 80 words.")


class LLMRewriteError(RuntimeError):
    """The rewrite endpoint could not be used (unreachable, bad answers)."""


def build_messages(title: str, description: str, reviews: list[str]) -> list[dict]:
    picked = [r for r in reviews if len(r.strip()) >= MIN_REVIEW_CHARS][:MAX_REVIEWS]
    lines = [f"Title: {title or '(unknown)'}", f"Description: {description or '(none)'}"]
    lines += [f"Review {i + 1}: {r.strip()}" for i, r in enumerate(picked)]
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "Rewrite the description of this item.\n" + "\n".join(lines)}]


def _read_cache(path: str) -> dict[str, str]:
    out = {}
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:   # a line cut by a crash: the request is redone
                        continue
                    out[row["key"]] = row["text"]
    return out


@dataclasses.dataclass
class ChatClient:
    url: str
    model: str = ""
    retries: int = 3
    timeout_s: float = 30.0
    backoff_s: float = 1.0

    def complete(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0.0}).encode()
        endpoint = self.url.rstrip("/") + "/chat/completions"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            req = urllib.request.Request(endpoint, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    answer = json.loads(resp.read().decode())
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
                if e.code in (429,) or e.code >= 500:
                    continue
                raise LLMRewriteError(f"config.index.llm_rewrite_url={self.url!r}: {endpoint} answered {last}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as e:
                last = str(getattr(e, "reason", e))
                continue
            try:
                return " ".join(answer["choices"][0]["message"]["content"].split())
            except (KeyError, IndexError, TypeError):
                raise LLMRewriteError(f"{endpoint}: answer has no choices[0].message.content: "
                                      f"{str(answer)[:200]}") from None
        raise LLMRewriteError(f"config.index.llm_rewrite_url={self.url!r}: {endpoint} unreachable after "
                              f"{self.retries + 1} tries ({last})")


def rewrite_descriptions(items, client: ChatClient, cache_path: str) -> list[str]:
    """One rewritten description per item (ItemText-like objects); cached in `cache_path`."""
    cache = _read_cache(cache_path)
    out = []
    progress = Progress("index/llm-rewrite", total=len(items), unit="items")
    if cache_path:
        os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
    with open(cache_path, "a", encoding="utf-8") if cache_path else _NullFile() as f:
        for item in items:
            messages = build_messages(item.title, item.description, list(getattr(item, "reviews", [])))
            key = hashlib.sha256(json.dumps([client.model, messages], sort_keys=True).encode()).hexdigest()
            if key not in cache:
                cache[key] = client.complete(messages)
                f.write(json.dumps({"key": key, "text": cache[key]}, ensure_ascii=False) + "\n")
                f.flush()
            out.append(cache[key])
            progress.update(1)
    progress.close()
    return out


class _NullFile:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, _):
        pass

    def flush(self):
        pass
