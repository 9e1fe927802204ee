"""Decode loops over growing attention windows: a step reads only the KV-cache slots written so far.

A decode step attends over the whole preallocated cache ([L, b, K, T, hd]) although slots past
the write index are all masked; its cost grows with T (docs/benchmarks.md "decode windows": 160
rows of the 2 x 64 ML-100k model, 3.5 ms per step with a 128-slot cache, 15.0 ms with 664 slots,
5.5 ms with 664 slots and a 128-slot window). A reasoning chain fills a 640-slot cache from ~140 to
~600, so most steps read hundreds of empty slots. Shapes in XLA are static, so the loop is split
into consecutive `lax.while_loop`s, one per window w_1 < w_2 < ... < T: the k-th runs while the
next write slot is < w_k and its decode step reads slots [0, w_k)
(`model.api.decode_step(attend_len=w_k)`); the last reads the whole cache. Masked slots contribute
exactly zero to attention, so the tokens are those of the full-cache loop; each window compiles its
own copy of the loop body.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax


def attention_windows(cache_len: int, step: int, first_slot: int = 0) -> tuple[int, ...]:
    """The partial windows of a loop whose first write is at slot `first_slot` (static: the prompt
    width) in a `cache_len`-slot cache: the multiples of `step` in (first_slot, cache_len). The loop's
    last stretch always reads the whole cache. step <= 0 -> (): no windows, the plain loop."""
    if cache_len <= 0:
        raise ValueError(f"attention_windows: cache_len={cache_len} must be > 0")
    if step <= 0:
        return ()
    first = (int(first_slot) // step + 1) * step
    return tuple(range(first, int(cache_len), step))


def windowed_while_loop(cond: Callable, body: Callable, init, write_index: Callable,
                        windows: Sequence[int] = ()):
    """`lax.while_loop(cond, lambda c: body(c, None), init)`, its early steps on partial windows.

    body(carry, attend_len) runs one decode step reading the cache's first attend_len slots
    (None: all). write_index(carry) -> the cache's next write slot (traced). For each window w in
    increasing order a loop runs while cond holds and write_index < w, so every step it runs
    writes inside its window; a last loop reads the whole cache until cond fails. Any windows
    give the plain loop's result; good ones (`attention_windows`) make the early steps cheap."""
    windows = tuple(int(w) for w in windows)
    if list(windows) != sorted(set(windows)):
        raise ValueError(f"windowed_while_loop: windows {windows} must be strictly increasing")
    carry = init
    for w in windows:
        carry = jax.lax.while_loop(lambda c, w=w: cond(c) & (write_index(c) < w),
                                   lambda c, w=w: body(c, w), carry)
    return jax.lax.while_loop(cond, lambda c: body(c, None), carry)
