"""On-device rollout generation for SRPO: G sampled completions per prompt, parsed into SID codes.

One jitted `lax.while_loop` decodes a batch of left-padded prompts with the KV cache. Every row
runs a small state machine so reasoning and direct rollouts share one loop:

  THINK  free sampling (temperature / top-p) until the row writes `<answer>`; end-of-turn or the
         `max_think_tokens` budget first makes the row malformed and ends it.
  SID    the answer, one SID token per step. Constrained (default, ours): only children of the
         row's trie node can be drawn, so the answer always names a real item. Unconstrained
         (`constrained_answer=False`, GREAM's release): free sampling, parsed token by token
         (level l must be a level-l SID token) until `</answer>`.
  CLOSE  the constrained answer is closed by a forced `</answer>`.
  DONE   padding.

Direct mode starts every row in SID (the prompt ends where the SID begins) and has no CLOSE.
A reasoning completion is well-formed when `<think>` precedes `</think>` which precedes
`<answer>`, and the answer is a SID of a valid length (always true when constrained).

Why not `infer.sampling.sample_tokens` + `sample_sid` back to back: rows reach `<answer>` at
different steps, and the text sampler keeps feeding padding to rows that stopped, so their cache no
longer ends at `<answer>` when the SID step would start. One loop with a per-row phase keeps every
row's cache exact; the token draws reuse `infer.sampling.sample_logits` (temperature + top-p).

Outputs per row: response tokens `[b, R]` (pad after the end), response mask, the answer's SID
codes `[b, L]` (-1 padded) and `well_formed [b]`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gream_jax.index.trie import DeviceTrie
from gream_jax.infer import sampling
from gream_jax.infer.batching import left_pad, prompt_width
from gream_jax.infer.windows import attention_windows, windowed_while_loop
from gream_jax.model import api as model_api
from gream_jax.model import trie_softmax

THINK, SID, CLOSE, DONE = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class RolloutSpec:
    """Static description of a rollout (hashable: a jit static argument)."""
    mode: str                      # "direct" | "reasoning"
    sid_max_len: int               # longest SID (levels incl. a rank suffix)
    sid_min_len: int
    max_think_tokens: int
    constrained_answer: bool
    temperature: float
    top_p: float
    pad_id: int
    think_open: int = -1
    think_close: int = -1
    answer_open: int = -1
    answer_close: int = -1
    end_ids: tuple[int, ...] = ()  # end-of-turn / EOS: end a THINK row as malformed
    # Decode windows (`infer.windows`): early steps read only the first multiples of this many
    # cache slots; 0 reads the whole cache at every step. Same tokens either way.
    decode_window: int = 0

    @property
    def response_len(self) -> int:
        if self.mode == "direct":
            return self.sid_max_len
        return self.max_think_tokens + self.sid_max_len + 1


def special_token_ids(tokenizer) -> dict[str, int]:
    """Ids of the reasoning tags; each must be a single token of the tokenizer."""
    from gream_jax.tasks.example import ANSWER_CLOSE, ANSWER_OPEN, IM_END, THINK_CLOSE, THINK_OPEN
    out = {}
    for key, text in (("think_open", THINK_OPEN), ("think_close", THINK_CLOSE),
                      ("answer_open", ANSWER_OPEN), ("answer_close", ANSWER_CLOSE), ("im_end", IM_END)):
        try:
            tid = tokenizer.token_to_id(text)
        except (KeyError, ValueError):
            tid = None
        if tid is None or tid < 0:
            raise ValueError(f"tokenizer has no single token for {text!r}: reasoning-mode RL needs the "
                             "tags as special tokens (rebuild the model with the reasoning tokens)")
        out[key] = int(tid)
    return out


def sid_level_code_table(sid_token_table: np.ndarray, vocab_size: int) -> np.ndarray:
    """Inverse of `sid_token_table`: `[V, 2]` int32 (level, code) of every SID token, -1 elsewhere."""
    table = np.full((vocab_size, 2), -1, np.int32)
    levels, codes = np.nonzero(np.asarray(sid_token_table) >= 0)
    table[np.asarray(sid_token_table)[levels, codes]] = np.stack([levels, codes], -1)
    return table


def generate(params, model_cfg, spec: RolloutSpec, trie: DeviceTrie, level_code, prompt_tokens,
             prompt_mask, rng):
    """Samples one completion per row. prompt_tokens/mask `[b, Lp]` LEFT-padded; level_code `[V, 2]`.

    Returns dict(tokens [b, R], mask [b, R] int32, codes [b, L] int32, well_formed [b] bool).
    Pure; jit with `static_argnames=("model_cfg", "spec")`.
    """
    b, lp = prompt_tokens.shape
    cache = model_api.init_cache(model_cfg, b, lp + spec.response_len)
    logits, cache = model_api.prefill(params, model_cfg, prompt_tokens, prompt_mask, cache)
    step_fn = lambda p, tok, c, attend_len=None: model_api.decode_step(p, model_cfg, tok, c, attend_len)
    windows = attention_windows(lp + spec.response_len, spec.decode_window, first_slot=lp)
    return run_state_machine(step_fn, params, spec, trie, level_code, logits, cache, rng, windows)


def run_state_machine(step_fn, params, spec: RolloutSpec, trie: DeviceTrie, level_code, first_logits,
                      cache, rng, windows=()):
    """The decoding loop of `generate`, generic over the decoder (like `infer.sampling`):
    step_fn(params, tokens [b], cache) -> (logits [b, V], cache); first_logits [b, V] follow the prompt.
    windows: `infer.windows.attention_windows` (step_fn then takes `attend_len=`)."""
    b = first_logits.shape[0]
    r, big_l = spec.response_len, spec.sid_max_len
    start_phase = SID if spec.mode == "direct" else THINK
    rows = jnp.arange(b)
    state = dict(
        t=jnp.zeros((), jnp.int32), logits=first_logits.astype(jnp.float32), cache=cache, rng=rng,
        phase=jnp.full((b,), start_phase, jnp.int32), node=jnp.zeros((b,), jnp.int32),
        depth=jnp.zeros((b,), jnp.int32), n_think=jnp.zeros((b,), jnp.int32),
        saw_open=jnp.zeros((b,), bool), saw_close=jnp.zeros((b,), bool),
        tags_ok=jnp.full((b,), spec.mode == "direct"), sid_ok=jnp.ones((b,), bool),
        answered=jnp.zeros((b,), bool),
        tokens=jnp.full((b, r), spec.pad_id, jnp.int32), mask=jnp.zeros((b, r), jnp.int32),
        codes=jnp.full((b, big_l), -1, jnp.int32), grammar=jnp.full((b,), -1, jnp.int32))
    # A trie-softmax model (trie.renormalise) samples free text from its own distribution: each
    # row's SID-trie state is tracked (`grammar`) and the logits masked by `trie_softmax.mask_logits`.
    grammar = trie.renormalise

    def cond(s):
        return (s["t"] < r) & jnp.any(s["phase"] != DONE)

    def body(s, attend_len):
        rng, k_free, k_sid = jax.random.split(s["rng"], 3)
        phase, logits = s["phase"], s["logits"]
        free_logits = trie_softmax.mask_logits(trie, logits, s["grammar"]) if grammar else logits
        free_tok, _ = sampling.sample_logits(free_logits, k_free, spec.temperature, spec.top_p)
        # Constrained SID step: choose among the trie children of each row's node.
        child_tok, child_node, valid = trie.expand(s["node"])                 # [b, W]
        child_logits = jnp.take_along_axis(logits, child_tok, axis=-1)
        child_logits = jnp.where(valid, child_logits / spec.temperature, sampling.NEG_INF)
        slot = jax.random.categorical(k_sid, child_logits, axis=-1)
        trie_tok = child_tok[rows, slot]
        trie_node = child_node[rows, slot]

        in_think, in_sid, in_close = phase == THINK, phase == SID, phase == CLOSE
        if spec.constrained_answer:
            sid_tok = trie_tok
        else:
            sid_tok = free_tok
        token = jnp.where(in_think, free_tok, jnp.where(in_sid, sid_tok, spec.answer_close))
        token = jnp.where(phase == DONE, spec.pad_id, token)
        emit = phase != DONE

        # THINK transitions.
        saw_open = s["saw_open"] | (in_think & (token == spec.think_open))
        saw_close = s["saw_close"] | (in_think & (token == spec.think_close) & s["saw_open"])
        opens_answer = in_think & (token == spec.answer_open)
        ends_turn = in_think & jnp.isin(token, jnp.asarray(spec.end_ids or (-2,), jnp.int32))
        n_think = s["n_think"] + in_think
        over_budget = in_think & ~opens_answer & (n_think >= spec.max_think_tokens)
        tags_ok = s["tags_ok"] | (opens_answer & saw_open & saw_close)

        # SID transitions.
        depth, node, codes, sid_ok = s["depth"], s["node"], s["codes"], s["sid_ok"]
        if spec.constrained_answer:
            lvl_code = level_code[token]
            write = in_sid
            node = jnp.where(in_sid, trie_node, node)
            finished_sid = in_sid & (trie.node_item[trie_node] >= 0)
            closes = jnp.zeros_like(in_sid)
        else:
            lvl_code = level_code[token]
            closes = in_sid & (token == spec.answer_close)
            write = in_sid & ~closes
            good = (lvl_code[:, 0] == depth) & (depth < big_l)
            sid_ok = sid_ok & ~(write & ~good)
            length_ok = (depth >= spec.sid_min_len) & (depth <= big_l)
            sid_ok = jnp.where(closes, sid_ok & length_ok, sid_ok)
            finished_sid = closes | (write & (depth + 1 > big_l))
            sid_ok = jnp.where(write & (depth + 1 > big_l), False, sid_ok)
        slot_idx = jnp.clip(depth, 0, big_l - 1)
        codes = codes.at[rows, slot_idx].set(jnp.where(write & (depth < big_l), lvl_code[:, 1],
                                                       codes[rows, slot_idx]))
        depth = depth + write
        answered = s["answered"] | (finished_sid & (spec.constrained_answer | closes))

        if spec.mode == "direct":
            after_sid = DONE
        else:
            after_sid = CLOSE if spec.constrained_answer else DONE
        new_phase = jnp.where(opens_answer, SID, phase)
        new_phase = jnp.where(ends_turn | over_budget, DONE, new_phase)
        new_phase = jnp.where(finished_sid, after_sid, new_phase)
        new_phase = jnp.where(in_close, DONE, new_phase)

        tokens = s["tokens"].at[:, s["t"]].set(jnp.where(emit, token, spec.pad_id))
        mask = s["mask"].at[:, s["t"]].set(emit.astype(jnp.int32))
        logits, cache = (step_fn(params, token, s["cache"]) if attend_len is None
                         else step_fn(params, token, s["cache"], attend_len=attend_len))
        return dict(t=s["t"] + 1, logits=logits.astype(jnp.float32), cache=cache, rng=rng, phase=new_phase, node=node,
                    depth=depth, n_think=n_think, saw_open=saw_open, saw_close=saw_close,
                    tags_ok=tags_ok, sid_ok=sid_ok, answered=answered, tokens=tokens, mask=mask,
                    codes=codes,
                    grammar=trie_softmax.next_state(trie, s["grammar"], token) if grammar else s["grammar"])

    out = windowed_while_loop(cond, body, state, lambda s: s["cache"].index, windows)
    well_formed = out["tags_ok"] & out["sid_ok"] & out["answered"]
    codes = jnp.where(well_formed[:, None], out["codes"], -1)
    return dict(tokens=out["tokens"], mask=out["mask"], codes=codes, well_formed=well_formed)


class RolloutRunner:
    """Draws G completions for each prompt in fixed-size, mesh-sharded chunks and scores them.

    One compile per prompt-width bucket: prompts are LEFT-padded to a multiple of `width_bucket`,
    and the last chunk is padded with copies of its first prompt (results dropped).
    """

    def __init__(self, model_cfg, spec: RolloutSpec, trie: DeviceTrie, level_code: np.ndarray, mesh,
                 rules, group_size: int, chunk_prompts: int, reward_fn, credit_table: np.ndarray,
                 width_bucket: int = 32):
        from gream_jax import mesh as mesh_lib
        self.spec, self.trie, self.mesh, self.g = spec, trie, mesh, int(group_size)
        self.level_code = jnp.asarray(level_code)
        dp = mesh_lib.data_parallel_size(mesh, rules)
        # rows per chunk = chunk_prompts * G, rounded up so the data-parallel axes divide it
        step = dp // np.gcd(dp, self.g)
        self.chunk = int(-(-max(int(chunk_prompts), 1) // step) * step)
        self.row_sharding = mesh_lib.batch_sharding(mesh, 2, rules)
        self.bucket = int(width_bucket)
        self.credit_table = jnp.asarray(credit_table)
        self._gen = jax.jit(generate, static_argnames=("model_cfg", "spec"))
        self._reward = jax.jit(reward_fn)
        self.model_cfg = model_cfg

    def run(self, params, prompts: list[list[int]], target_codes: np.ndarray, rng: jax.Array) -> dict:
        """prompts: n token lists; target_codes [n, L]. Returns arrays with leading axis n."""
        n, g = len(prompts), self.g
        width = prompt_width(prompts, self.bucket)
        outs = []
        for tokens, mask in padded_chunks(prompts, self.chunk, width, self.spec.pad_id, self.row_sharding, g):
            rng, key = jax.random.split(rng)
            with jax.set_mesh(self.mesh):
                out = self._gen(params, self.model_cfg, self.spec, self.trie, self.level_code,
                                tokens, mask, key)
            outs.append({k: np.asarray(v) for k, v in out.items()})
        cat = {k: np.concatenate([o[k] for o in outs], 0) for k in outs[0]}
        r = self.spec.response_len
        resp = cat["tokens"].reshape(-1, g, r)[:n]
        rmask = cat["mask"].reshape(-1, g, r)[:n]
        codes = cat["codes"].reshape(-1, g, self.spec.sid_max_len)[:n]
        well = cat["well_formed"].reshape(-1, g)[:n]
        return scored_groups(self._reward, self.credit_table, prompts, resp, rmask, codes, well, target_codes)


def padded_chunks(prompts: list[list[int]], rows: int, width: int, pad_id: int, sharding, repeat: int = 1):
    """Yields the prompts `rows` at a time as device arrays (tokens, mask) `[rows * repeat, width]`:
    `batching.left_pad`'s rows (LEFT-padded to `width`; a short last chunk completed with copies of
    its own first prompt, whose results callers drop), each repeated `repeat` times in a row (G
    rollouts), placed on `sharding`. Every chunk has one shape: one compile per width
    (`batching.prompt_width`)."""
    for start in range(0, len(prompts), rows):
        tokens, mask = left_pad(prompts[start:start + rows], width, rows, pad_id)
        yield (jax.device_put(np.repeat(tokens, repeat, 0), sharding),
               jax.device_put(np.repeat(mask, repeat, 0), sharding))


def scored_groups(reward, credit_table, prompts, response_tokens, response_mask, codes, well_formed,
                  target_codes) -> dict:
    """A runner's output: its groups `[n, G, ...]` with rewards and exact hits `[n, G]` and the
    prompts as an object array of token lists (the layout `srpo_batch` consumes)."""
    from gream_jax.train.rewards import exact_hits
    prompt_ids = np.empty(len(prompts), dtype=object)
    prompt_ids[:] = [list(p) for p in prompts]
    return {"prompt_ids": prompt_ids, "response_tokens": response_tokens, "response_mask": response_mask,
            "codes": codes, "well_formed": well_formed,
            "rewards": np.asarray(reward(codes, well_formed, target_codes, credit_table)),
            "hits": np.asarray(exact_hits(codes, well_formed, target_codes))}
