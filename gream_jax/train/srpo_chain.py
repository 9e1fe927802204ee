"""Chain rollouts for SRPO (`config.rl.rollout="chain"`): one sampled reasoning chain per prompt,
then G answers drawn after that same chain, with the loss on the answers alone.

Why: Reasoning mode's answer is a weaker predictor after the model's own chain than Direct mode's
answer after the history alone (ML-100k valid N@10 .033 against .079, same model): SFT trained the
answer after teacher-written chains only, whose Step 4 names the target's own group, so the model
never learned to answer after the chains it writes (exposure bias). GREAM's rollouts sample G whole
chains and put the advantage on every token of each, so on a ~400-token chain the answer's three
SID tokens carry under 1% of a token-mean loss, and the update mostly teaches the chain's format
(docs/results.md "Reasoning-mode SRPO": well-formed .77 -> .96 in five steps while validation fell).
Here the G answers share one chain, sampled as the eval samples it (`decoder.sample_chains` at
config.eval's temperature, top-p and budget), so the group's advantages compare answers on equal
footing, and the update reaches the answer after the chain: the distribution Reasoning mode
is scored on. The chain itself is not trained (it is part of the prompt).

Each group's prompt is the reasoning prompt, the chain's kept tokens, `</think>` where the chain
neither answered nor closed its thought, and `<answer>`: the tokens after which the eval's beam
starts (`decoder.reasoning_search`). The answers are Direct-mode rollouts of `RolloutRunner`
from there, so rewards, advantages and the update are the Direct-mode ones.
"""

from __future__ import annotations

import jax
import numpy as np

from gream_jax.index.trie import DeviceTrie


def chain_prompts(prompts: list[list[int]], think_tokens: np.ndarray, think_lengths: np.ndarray,
                  forced_close: np.ndarray, think_close: int, answer_open: int) -> list[list[int]]:
    """Each prompt followed by its chain: `prompt ++ think[:length] (++ </think>) ++ <answer>`.

    think_tokens [n, budget], think_lengths [n] (the kept tokens, stop token excluded),
    forced_close [n] bool (`</think>` appended, as the eval appends it)."""
    n = len(prompts)
    if not (len(think_tokens) == len(think_lengths) == len(forced_close) == n):
        raise ValueError(f"{n} prompts but {len(think_tokens)} / {len(think_lengths)} / {len(forced_close)} "
                         "chains / lengths / close flags")
    out = []
    for p, tokens, length, close in zip(prompts, think_tokens, think_lengths, forced_close):
        chain = [int(t) for t in np.asarray(tokens)[:int(length)]]
        out.append(list(p) + chain + ([int(think_close)] if close else []) + [int(answer_open)])
    return out


class ChainRolloutRunner:
    """`RolloutRunner`'s interface (`chunk`, `credit_table`, `run`): chains, then G answers each.

    chain_spec: a `decoder.ReasoningSpec` with num_samples = 1 (its beam fields are unused);
    answers: a Direct-mode `RolloutRunner` (constrained SID sampling at config.rl.temperature).
    """

    def __init__(self, model_cfg, chain_spec, trie: DeviceTrie, answers, mesh, rules,
                 temperature: float, top_p: float, width_bucket: int = 32):
        from gream_jax import mesh as mesh_lib
        if chain_spec.num_samples != 1:
            raise ValueError(f"chain rollouts share one chain per prompt (num_samples={chain_spec.num_samples})")
        self.model_cfg, self.spec, self.trie, self.answers, self.mesh = model_cfg, chain_spec, trie, answers, mesh
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.chunk = answers.chunk
        self.credit_table = answers.credit_table
        dp = mesh_lib.data_parallel_size(mesh, rules)
        self.chain_rows = int(-(-self.chunk // dp) * dp)
        self.row_sharding = mesh_lib.batch_sharding(mesh, 2, rules)
        self.bucket = int(width_bucket)

    def chains(self, params, prompts: list[list[int]], rng) -> dict:
        """One chain per prompt: think_tokens [n, budget], think_lengths, answered, forced_close [n]."""
        from gream_jax.infer import decoder
        from gream_jax.infer.batching import prompt_width
        from gream_jax.train.srpo_rollouts import padded_chunks
        n = len(prompts)
        width = prompt_width(prompts, self.bucket)
        cache_len = decoder.reasoning_cache_len(width, self.spec, self.trie)
        parts = []
        for tokens, mask in padded_chunks(prompts, self.chain_rows, width, self.spec.pad_id, self.row_sharding):
            rng, key = jax.random.split(rng)
            with jax.set_mesh(self.mesh):
                out = decoder.sample_chains(params, tokens, mask, self.trie, key, np.float32(self.temperature),
                                            np.float32(self.top_p), model_cfg=self.model_cfg, spec=self.spec,
                                            cache_len=cache_len)
            parts.append([np.asarray(x) for x in out])
        names = ("think_tokens", "think_lengths", "answered", "forced_close")
        return {k: np.concatenate([p[i] for p in parts], 0)[:n] for i, k in enumerate(names)}

    def run(self, params, prompts: list[list[int]], target_codes: np.ndarray, rng: jax.Array) -> dict:
        """prompts: n reasoning prompts; target_codes [n, L]. `RolloutRunner.run`'s outputs, whose
        `prompt_ids` are the prompts with their chains, plus chain_lengths / chain_answered [n]."""
        k_chain, k_answer = jax.random.split(rng)
        ch = self.chains(params, prompts, k_chain)
        extended = chain_prompts(prompts, ch["think_tokens"], ch["think_lengths"], ch["forced_close"],
                                 self.spec.think_close, self.spec.answer_open)
        out = self.answers.run(params, extended, target_codes, k_answer)
        out["chain_lengths"] = ch["think_lengths"].astype(np.int32)
        out["chain_answered"] = ch["answered"].astype(bool)
        return out


def chain_spec(tokenizer, config):
    """The eval's Reasoning-mode spec with one chain per prompt (config.eval's budget, windows)."""
    from gream_jax.infer.recommender import reasoning_spec
    return reasoning_spec(tokenizer, config)._replace(num_samples=1)
