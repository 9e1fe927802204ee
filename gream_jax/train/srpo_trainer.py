"""One SRPO run's state and step: the policy, the frozen reference, the optimiser and the jitted
log-prob / update functions (`SrpoTrainer`), with the rollout spec and credit table they are built from.

`SrpoTrainer.train_step()` draws prompts from the training parts (`srpo_batch.PromptPool`), runs the
configured rollouts (sampled, beam or chain; dynamic sampling refills zero-variance groups), scores
them with the objective's reward and group advantage (`advantages.OBJECTIVES`), takes old-policy and
reference log-probs in one jitted forward, then `ppo_epochs` passes of mini-batch updates. The `rl`
stage (`srpo_stage.run_rl`) owns everything around it: loading, validation and selection,
checkpoints, logging and export.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from gream_jax import mesh as mesh_lib
from gream_jax.config_defaults.rl import shares_prefix
from gream_jax.infer.batching import round_up
from gream_jax.train import advantages as adv_lib
from gream_jax.train import rewards as rewards_lib
from gream_jax.train import srpo
from gream_jax.train.srpo_batch import (PromptPool, collect_groups, future_window, history_and_target,
                                        shared_prefix_batches, update_batches)
from gream_jax.train.srpo_rollouts import RolloutRunner, RolloutSpec, sid_level_code_table, special_token_ids


def rollout_spec(config, tokenizer, sids, mode: str) -> RolloutSpec:
    lengths = np.asarray(sids.lengths)
    base = dict(mode=mode, sid_max_len=int(sids.codes.shape[1]), sid_min_len=int(lengths.min()),
                max_think_tokens=int(config.rl.max_think_tokens), temperature=float(config.rl.temperature),
                top_p=float(config.rl.top_p), pad_id=int(tokenizer.pad_id),
                decode_window=int(config.rl.decode_window) if mode == "reasoning" else 0)
    if mode == "direct":   # the trie is the Direct-mode decoder: the answer is always constrained
        return RolloutSpec(constrained_answer=True, **base)
    tags = special_token_ids(tokenizer)
    ends = tuple(sorted({tags["im_end"], int(tokenizer.eos_id)}))
    return RolloutSpec(constrained_answer=bool(config.rl.constrained_answer), think_open=tags["think_open"],
                       think_close=tags["think_close"], answer_open=tags["answer_open"],
                       answer_close=tags["answer_close"], end_ids=ends, **base)


def reward_table(config, sids) -> np.ndarray:
    """Credit per leading-codes count; levels = SID levels minus a collision rank suffix by default."""
    levels = int(config.rl.reward_levels)
    if levels == 0:
        levels = int(getattr(sids, "n_semantic_levels", 0) or 0) or int(np.asarray(sids.lengths).min())
    return rewards_lib.credit_table(int(sids.codes.shape[1]), levels, float(config.rl.reward_cap),
                                    tuple(config.rl.reward_credits) or None)


def _copy_tree(tree, shardings):
    return jax.jit(lambda t: jax.tree.map(lambda x: x + 0, t), out_shardings=shardings)(tree)


class SrpoTrainer:
    """Holds the policy, reference, optimiser and jitted functions of one SRPO run."""

    def __init__(self, config, model_cfg, params, tokenizer, sids, split, mesh, rules):
        from gream_jax.index.trie import build_trie
        from gream_jax.model.tokenizer import sid_token_table
        from gream_jax.tasks.prompts import direct_prompt_ids, reasoning_prompt_ids
        rl = config.rl
        self.config, self.rl, self.model_cfg, self.tokenizer = config, rl, model_cfg, tokenizer
        self.sids, self.split, self.mesh, self.rules = sids, split, mesh, rules
        self.objective = adv_lib.get_objective(rl.objective)
        # Chain rollouts (train/srpo_chain.py) answer in Direct mode after a reasoning prompt + chain.
        self.spec = rollout_spec(config, tokenizer, sids, "direct" if rl.rollout == "chain" else rl.mode)
        table = sid_token_table(tokenizer, sids)
        from gream_jax.infer.recommender import renormalise
        renorm = renormalise(config)
        trie = build_trie(sids).to_device(table, mesh_lib.replicated(mesh), renorm)
        # Extra arguments of the jitted log-prob / update functions: a trie-softmax model's trie,
        # then (config.rl.policy_item_head) the next-item head's item tables.
        from gream_jax.infer.recommender import item_head_tokens
        eval_weight = float(config.eval.item_head_weight)
        self.head_weight = eval_weight if rl.policy_item_head else 0.0
        head_tokens = (item_head_tokens(tokenizer, sids, config, mesh, force=True)
                       if eval_weight > 0 and (rl.policy_item_head or rl.rollout == "beam") else None)
        self.extra_args = (((trie,) if renorm else ())
                           + ((self._head_tables(head_tokens),) if self.head_weight > 0 else ()))
        self.shardings = jax.tree.map(lambda x: x.sharding, params)
        self.params = params
        self.ref_params = _copy_tree(params, self.shardings)      # frozen: never passed to update
        reward_fn, credits = rewards_lib.get_reward(self.objective.reward), reward_table(config, sids)
        self._window_fn = jax.jit(lambda codes, well, window_codes, weights: rewards_lib.window_reward(
            reward_fn, codes, well, window_codes, weights, credits))
        # Update batches pad prompts to a multiple of this; a chained prompt is ~500 tokens, so
        # chain rollouts take coarser buckets (fewer compiles).
        self.width_bucket = 128 if rl.rollout == "chain" else 32
        if rl.rollout == "beam":     # the eval's decoder: re-ranked by the head at the eval's weight
            from gream_jax.train.srpo_beam import BeamRolloutRunner
            self.runner = BeamRolloutRunner(
                model_cfg, trie, table, sids, mesh, rules, int(rl.group_size),
                int(rl.beam_size) or max(int(config.eval.beam_size), int(rl.group_size)),
                int(rl.rollout_chunk_prompts), reward_fn, credits, int(tokenizer.pad_id), head_tokens, eval_weight)
        else:
            self.runner = RolloutRunner(model_cfg, self.spec, trie, sid_level_code_table(table, model_cfg.vocab_size),
                                        mesh, rules, int(rl.group_size), int(rl.rollout_chunk_prompts),
                                        reward_fn, credits, width_bucket=self.width_bucket)
            if rl.rollout == "chain":
                from gream_jax.train.srpo_chain import ChainRolloutRunner, chain_spec
                self.runner = ChainRolloutRunner(model_cfg, chain_spec(tokenizer, config), trie, self.runner, mesh,
                                                 rules, float(config.eval.temperature), float(config.eval.top_p))
        prompt_fn = direct_prompt_ids if rl.mode == "direct" else reasoning_prompt_ids
        self.prompt = lambda history: prompt_fn(tokenizer, sids, history, config)
        self.pool = PromptPool(split.train, int(config.seed), int(rl.prompt_positions))
        self.item_counts = split.item_counts(len(sids.codes))        # [n_items]: target popularity
        opt = srpo.OptimizerConfig.from_config(rl)
        self.opt_state = srpo.init_optimizer_state(model_cfg, opt, params, mesh, rules)
        r = self.spec.response_len
        # config.rl.shared_prefix: a row per group (its prompt once), else a row per response.
        self.group_rows = int(rl.group_size) if shares_prefix(rl) else 0
        self.logprob_fn = srpo.make_logprob_fn(model_cfg, mesh, rules, r, renorm, self.head_weight,
                                               self.group_rows)
        self.token_credit = rl.credit_assignment == "level"
        # Partial credit of l leading codes, for the per-token reward-to-go (zeros: exact reward).
        self.credit = (self.runner.credit_table if self.objective.reward == "residual"
                       else jnp.zeros_like(self.runner.credit_table))
        self.update_fn = srpo.make_update_fn(model_cfg, opt, srpo.LossConfig.from_config(rl), mesh, rules, r,
                                             renorm, self.token_credit, self.head_weight, self.group_rows)
        dp = mesh_lib.data_parallel_size(mesh, rules)
        # Rows per micro-batch (sequences, or groups of G for shared-prefix rows), a multiple of dp.
        micro = int(rl.micro_batch_sequences)
        if self.group_rows:
            micro = min(max(1, micro // self.group_rows), int(rl.mini_batch_prompts))
        self.micro = round_up(micro, dp)
        self.rng = jax.random.PRNGKey(int(config.seed) + 12)
        self.step = 0

    def _head_tables(self, item_tokens) -> dict:
        """The next-item head for `srpo.response_logprobs`: each item's last-token id [n_items] and
        its inverse over the vocabulary [V] (-1 for every token that names no item)."""
        inverse = np.full(self.model_cfg.vocab_size, -1, np.int32)
        inverse[np.asarray(item_tokens)] = np.arange(len(item_tokens), dtype=np.int32)
        return {"item_tokens": item_tokens, "item_of_token": jax.device_put(inverse, mesh_lib.replicated(self.mesh))}

    # -- rollouts ---------------------------------------------------------------------------
    def _draw(self, n: int, seen: dict) -> dict:
        # Decoding runs in fixed chunks of prompts; drawing a whole chunk turns its padding rows
        # into usable groups, so a refill round for a few groups costs no more than it must.
        pairs = self.pool.draw(max(n, self.runner.chunk))
        max_h = int(self.config.data.max_history)
        hist_targets = [history_and_target(self.split.train, p, max_h) for p in pairs]
        prompts = [self.prompt(h) for h, _ in hist_targets]
        target_items = np.asarray([t for _, t in hist_targets], np.int64)         # [n]
        targets = np.asarray(self.sids.codes)[target_items]
        self.rng, key = jax.random.split(self.rng)
        out = self.runner.run(self.params, prompts, targets, key)
        out["target_codes"] = targets
        out["target_counts"] = self.item_counts[target_items]
        if self.rl.future_window > 1:     # reward against the target and the user's next items
            out["rewards"], out["hits"] = self._window_rewards(out, pairs)
        if self.rl.rank_penalty > 0:
            out["rewards"] = np.asarray(rewards_lib.rank_penalised(
                jnp.asarray(out["rewards"]), jnp.asarray(out["hits"]), float(self.rl.rank_penalty)))
        is_repeat = self._repeats(out["codes"], [h for h, _ in hist_targets])
        if self.rl.penalise_repeats:
            out["rewards"] = np.asarray(rewards_lib.penalise_repeats(
                jnp.asarray(out["rewards"]), jnp.asarray(is_repeat), float(self.rl.repeat_reward)))
        seen["repeats"].append(is_repeat.reshape(-1))
        seen["rewards"].append(out["rewards"].reshape(-1))
        seen["hits"].append(out["hits"].reshape(-1))
        seen["well_formed"].append(out["well_formed"].reshape(-1))
        seen["tokens"] += int(out["response_mask"].sum())
        if "chain_lengths" in out:      # chain rollouts: the chains are generated tokens too
            seen["tokens"] += int(out["chain_lengths"].sum())
            seen["chain_answered"].append(out["chain_answered"])
            seen["chain_lengths"].append(out["chain_lengths"])
        return out

    def _window_rewards(self, out: dict, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rewards and hits `[n, G]` of the drawn groups against each prompt's future window
        (rewards.window_reward); the runner scored them against the target alone."""
        n = out["codes"].shape[0]           # the runner's groups: the drawn prompts, in order
        codes = np.asarray(self.sids.codes)
        win = [future_window(self.split.train, p, int(self.rl.future_window), float(self.rl.future_discount))
               for p in pairs[:n]]
        ids = np.stack([w for w, _ in win])                                          # [n, W]
        window_codes = np.where(ids[..., None] >= 0, codes[np.maximum(ids, 0)], -1).astype(np.int32)
        weights = np.stack([w for _, w in win])
        rewards, hits = self._window_fn(jnp.asarray(out["codes"]), jnp.asarray(out["well_formed"]),
                                        jnp.asarray(window_codes), jnp.asarray(weights))
        return np.asarray(rewards), np.asarray(hits)

    def _repeats(self, answer_codes: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        """Which answers `[P, G, L]` name an item of their prompt's history: `[P, G]` bool
        (logged as `repeat_rate`; with rl.penalise_repeats their reward is replaced)."""
        codes = np.asarray(self.sids.codes)
        n, width = answer_codes.shape[0], max(1, max(len(h) for h in histories))
        hist = np.full((n, width, codes.shape[1]), -1, np.int32)      # rows past the drawn prompts stay -1
        for p, h in enumerate(histories[:n]):
            hist[p, :len(h)] = codes[np.asarray(h, np.int64)]
        return np.asarray(rewards_lib.repeats_history(jnp.asarray(answer_codes), jnp.asarray(hist)))

    def train_step(self) -> dict:
        """One SRPO step: collect a batch, compute advantages, run the inner epochs of updates."""
        rl = self.rl
        t0 = time.perf_counter()
        seen = {"rewards": [], "hits": [], "well_formed": [], "repeats": [], "tokens": 0,
                "chain_answered": [], "chain_lengths": []}
        batch, stats = collect_groups(lambda n: self._draw(n, seen), int(rl.batch_prompts),
                                      bool(rl.dynamic_sampling), int(rl.max_resample_rounds), float(rl.oversample))
        t_roll = time.perf_counter() - t0
        rewards = np.concatenate(seen["rewards"])
        m = {"reward_mean": float(rewards.mean()), "exact_hit_rate": float(np.concatenate(seen["hits"]).mean()),
             "well_formed_rate": float(np.concatenate(seen["well_formed"]).mean()),
             "repeat_rate": float(np.concatenate(seen["repeats"]).mean()),
             "zero_variance_share": stats["zero_variance_share"], "groups_kept": stats["groups_kept"],
             "prompts_drawn": stats["prompts_drawn"],
             "resample_rounds": stats["rounds"], "rollout_tokens_per_s": seen["tokens"] / max(t_roll, 1e-9)}
        if seen["chain_lengths"]:
            m.update(chain_answered_rate=float(np.concatenate(seen["chain_answered"]).mean()),
                     chain_tokens_mean=float(np.concatenate(seen["chain_lengths"]).mean()))
        self.step += 1
        if not batch:   # every drawn group was uninformative: nothing to learn from this step
            m.update(skipped=1.0, step_seconds=time.perf_counter() - t0)
            return m
        if self.token_credit:   # [P, G, L]; a Direct-mode response is exactly the SID's L tokens
            matches = rewards_lib.leading_matches(jnp.asarray(batch["codes"]),
                                                  jnp.asarray(batch["target_codes"]))
            adv = np.asarray(adv_lib.level_advantage(batch["rewards"], matches, batch["hits"], self.credit,
                                                     int(rl.pass_k), self.objective.bonus))
        else:
            adv = np.asarray(adv_lib.srpo_advantage(batch["rewards"], batch["hits"], int(rl.pass_k),
                                                    self.objective.bonus))
        if rl.target_popularity_power > 0:       # inverse-propensity weights of the groups
            w = adv_lib.popularity_weights(batch["target_counts"], float(rl.target_popularity_power),
                                           batch["group_weight"] > 0)
            adv = adv * w.reshape((-1,) + (1,) * (adv.ndim - 1))
        np_rng = np.random.default_rng([int(self.config.seed), 0xB47C, self.step])
        layout = shared_prefix_batches if self.group_rows else update_batches
        minis = layout(batch, adv, int(rl.mini_batch_prompts), self.micro, np_rng, int(self.tokenizer.pad_id),
                       self.width_bucket)
        t1 = time.perf_counter()
        with jax.set_mesh(self.mesh):
            for mb in minis:
                mb["old_logp"] = self.logprob_fn(self.params, mb["tokens"], mb["attention_mask"], *self.extra_args)
                mb["ref_logp"] = (self.logprob_fn(self.ref_params, mb["tokens"], mb["attention_mask"],
                                                  *self.extra_args)
                                  if rl.kl_coef > 0 else mb["old_logp"])
            sums: dict[str, float] = {}
            n_updates = 0
            for epoch in range(int(rl.ppo_epochs)):
                for j in np_rng.permutation(len(minis)):
                    mb = {k: v for k, v in minis[j].items() if k != "index"}
                    self.params, self.opt_state, metrics = self.update_fn(self.params, self.opt_state, mb,
                                                                          *self.extra_args)
                    for k, v in jax.device_get(metrics).items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    n_updates += 1
        t_train = time.perf_counter() - t1
        m.update({k: v / n_updates for k, v in sums.items() if k != "tokens"})
        m.update(batch_reward_mean=float(batch["rewards"][batch["group_weight"] > 0].mean()),
                 train_tokens_per_s=sums["tokens"] / max(t_train, 1e-9), updates=n_updates,
                 step_seconds=time.perf_counter() - t0, skipped=0.0)
        return m

    def state(self) -> dict:
        return {"params": self.params, "opt_state": self.opt_state}

    def set_state(self, state: dict) -> None:
        self.params, self.opt_state = state["params"], state["opt_state"]
