"""Config section `config.rl`: SRPO post-training (defaults follow GREAM's release).

Every part of the algorithm is a switch so the ablations are config edits:
`objective` picks the reward and whether the pass@k bonus is added (gream_jax/train/advantages.py
OBJECTIVES), `dynamic_sampling` / `max_resample_rounds` the zero-variance filtering, and
`constrained_answer` whether the SID after `<answer>` goes through the trie (ours) or is sampled
freely (the release).
"""

import ml_collections

MODES = ("direct", "reasoning")
ROLLOUTS = ("sample", "beam", "chain")
SHARED_PREFIX = ("auto", "on", "off")
CREDIT_ASSIGNMENTS = ("sequence", "level")
SELECT_METRICS = ("recall@1", "recall@5", "recall@10", "ndcg@5", "ndcg@10")


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.enabled = True                # False: the rl stage exports nothing and eval uses sft/final
    c.objective = "srpo"            # grpo | srpo | srpo_no_bonus | srpo_no_residual
    c.mode = "reasoning"            # rollouts as in GREAM (reasoning) or the SID alone (direct)
    c.init_from = "sft/final"       # relative to the workdir; also the frozen reference model
    c.steps = 150
    # Prompts: every (history -> next item) of the training parts (0), or only each user's last
    # `prompt_positions` training targets, the transitions nearest the held-out ones.
    c.prompt_positions = 0
    c.group_size = 10               # G rollouts per prompt
    c.batch_prompts = 256           # prompts kept per step (after dynamic sampling)
    c.mini_batch_prompts = 64       # prompts per optimiser update
    c.ppo_epochs = 1                # passes over each batch (inner epochs)
    c.micro_batch_sequences = 80    # sequences per forward/backward (gradient accumulation inside)
    # The update's layout. "on": one row per group, its prompt once and the G responses after it,
    # each attending to the prompt and itself (srpo.shared_prefix_logprobs; the same values, the
    # prompt run once instead of G times). "off": a row per response (prompt ++ response), GREAM's.
    # "auto": on where the responses are SIDs (Direct mode, chain rollouts), off for whole chains.
    c.shared_prefix = "auto"
    c.rollout_chunk_prompts = 32    # prompts decoded together (x group_size rows)
    # Direct-mode rollouts: "sample" draws G SIDs through the trie at `temperature`; "beam" takes
    # the G best items of the constrained beam (width `beam_size`, 0 = config.eval.beam_size),
    # re-ranked by the next-item head at config.eval.item_head_weight as the eval ranks them
    # (gream_jax/train/srpo_beam.py: the hard negatives that sit above the target).
    # "chain" (Reasoning mode, train/srpo_chain.py): one chain per prompt sampled as the eval samples
    # it (config.eval's temperature / top-p / budget), then G answers after it at `temperature`,
    # the loss on the answers alone (GREAM: G whole chains, every token trained).
    c.rollout = "sample"
    c.beam_size = 0
    # Beam rollouts: a wrong item at rank g loses rank_penalty / log2(g + 2) of its reward
    # (rewards.rank_penalised); 0 = off.
    c.rank_penalty = 0.0
    # Direct mode with a next-item head (config.eval.item_head_weight > 0): the policy whose ratio
    # and KL the update takes is the fused score Direct mode ranks with, log P(SID) + w log q(item)
    # (srpo.response_logprobs); False (GREAM) = the SID tokens alone, leaving the head, which
    # orders the list, with no objective while RL moves the shared trunk.
    c.policy_item_head = False
    # Sampling
    c.temperature = 1.0
    c.top_p = 1.0
    c.max_think_tokens = 512        # reasoning mode: budget for `<think>…</think>` rewrite `<answer>`
    c.constrained_answer = True     # False restores the release's free SID sampling after <answer>
    c.decode_window = 128           # reasoning rollouts: attention windows (as config.eval.decode_window)
    # Reward and advantage
    c.reward_levels = 0             # semantic levels for sqrt(l / levels); 0 = from the SID artifact
    c.reward_cap = 0.95             # credit for a non-exact answer never exceeds this
    # An answer that names an item of the prompt's own history gets `repeat_reward` instead of its
    # residual credit (rewards.repeats_history): in leave-one-out data users never return to an
    # item, yet the SFT model fills a quarter of its top 10 with them. Off in GREAM.
    c.penalise_repeats = False
    c.repeat_reward = 0.0
    # Reward against the target and the user's next `future_window - 1` training items, slot w
    # weighted future_discount ** w (rewards.window_reward: MovieLens users rate a session's films
    # in no meaningful order); 1 = the target alone (GREAM).
    c.future_window = 1
    c.future_discount = 0.8
    c.reward_credits = ()           # explicit credits for l = 1, 2, ... (overrides the formula)
    c.pass_k = 4
    # Each group's advantages x (its target's training count) ** -power, mean 1 over the batch
    # (advantages.popularity_weights): 1 = inverse-propensity weighting of the prompts, 0 = off (GREAM);
    # in [0, 2]. Session 23 (docs/results.md): it sets which users RL moves credit toward; no value gave a net gain.
    c.target_popularity_power = 0.0
    # "sequence" (GREAM): every token of an answer shares its advantage. "level" (Direct mode):
    # SID token l gets its reward-to-go (the reward minus what its prefix had already earned), so
    # a right prefix with a wrong item does not push that item up (advantages.level_advantage).
    c.credit_assignment = "sequence"
    # Dynamic sampling
    c.dynamic_sampling = True
    c.max_resample_rounds = 10      # extra rounds of prompts drawn to refill a batch
    c.oversample = 1.0              # each round draws oversample x (prompts still needed)
    # Loss
    c.clip_eps_low = 0.2
    c.clip_eps_high = 0.2
    c.dual_clip = 10.0              # cap on the loss of negative-advantage tokens (<= 1 disables)
    c.kl_coef = 0.001               # k3 estimator against the frozen reference
    # Optimiser (AdamW)
    c.learning_rate = 2e-6
    c.warmup_steps = 10
    c.weight_decay = 0.1
    c.grad_clip = 1.0
    # Bookkeeping
    c.eval_every = 25               # validation (selects rl/final; see select_mode); 0 = only at the end
    c.eval_users = 0                # validation users scored (0 = see select_mode)
    c.select_metric = "ndcg@10"
    # The mode validated: "direct" (the trie beam; `eval_users`, else config.train.eval_users' choice)
    # or "reasoning" (a sampled chain then the beam, config.eval's sampling settings; `eval_users`
    # seeded users, else the eval stage's config.eval.reasoning_users); "" = the mode RL trains.
    c.select_mode = ""
    # A validation must beat the best so far (the SFT model at step 0) by more than this to
    # replace it; 0 = any improvement (the reference's rule). See rl_selection.improves.
    c.select_min_gain = 0.0
    # ... and its paired gain over the SFT model on the same users must be at least this many
    # standard errors (0 = no such test). See rl_selection.improves.
    c.select_min_z = 0.0
    # Diagnostics: also score the test split at every validation (WORKDIR/rl/trace.jsonl, read by
    # `python -m gream_jax.eval.rl_trace`); the selection never looks at it.
    c.trace_test = False
    c.checkpoint_every = 25
    c.keep_checkpoints = 2
    c.time_budget_s = 0.0           # stop early (and still export) after this many seconds; 0 = none
    return c


def validate(config) -> None:
    from gream_jax.config_defaults.base import ConfigError
    from gream_jax.train.advantages import OBJECTIVES

    r = config.rl
    if r.objective not in OBJECTIVES:
        raise ConfigError(f"config.rl.objective={r.objective!r}: unknown; known: {sorted(OBJECTIVES)}")
    for field in ("select_min_gain", "select_min_z"):
        if not r[field] >= 0.0:
            raise ConfigError(f"config.rl.{field}={r[field]}: must be >= 0")
    if r.select_mode not in ("",) + MODES:
        raise ConfigError(f"config.rl.select_mode={r.select_mode!r}: must be '' (= config.rl.mode) or one of {MODES}")
    for field, known in (("mode", MODES), ("select_metric", SELECT_METRICS), ("rollout", ROLLOUTS),
                         ("credit_assignment", CREDIT_ASSIGNMENTS), ("shared_prefix", SHARED_PREFIX)):
        if r[field] not in known:
            raise ConfigError(f"config.rl.{field}={r[field]!r}: must be one of {known}")
    for field in ("steps", "group_size", "batch_prompts", "mini_batch_prompts", "ppo_epochs",
                  "max_think_tokens", "pass_k", "micro_batch_sequences",
                  "rollout_chunk_prompts", "future_window"):
        if not isinstance(r[field], int) or r[field] < 1:
            raise ConfigError(f"config.rl.{field}={r[field]!r}: must be a positive int")
    for field in ("max_resample_rounds", "warmup_steps", "eval_every", "checkpoint_every",
                  "eval_users", "reward_levels", "beam_size", "prompt_positions", "decode_window"):
        if not isinstance(r[field], int) or r[field] < 0:
            raise ConfigError(f"config.rl.{field}={r[field]!r}: must be a non-negative int")
    if r.group_size < 2:
        raise ConfigError(f"config.rl.group_size={r.group_size}: group advantages need >= 2 rollouts")
    if r.batch_prompts % r.mini_batch_prompts:
        raise ConfigError(f"config.rl.mini_batch_prompts={r.mini_batch_prompts}: must divide "
                          f"config.rl.batch_prompts={r.batch_prompts}")
    if r.temperature <= 0:
        raise ConfigError(f"config.rl.temperature={r.temperature}: must be > 0")
    if not 0 < r.top_p <= 1:
        raise ConfigError(f"config.rl.top_p={r.top_p}: must be in (0, 1]")
    if not isinstance(r.penalise_repeats, bool):
        raise ConfigError(f"config.rl.penalise_repeats={r.penalise_repeats!r}: must be True or False")
    if not -1.0 <= float(r.repeat_reward) <= 1.0:
        raise ConfigError(f"config.rl.repeat_reward={r.repeat_reward}: must be in [-1, 1]")
    if not 0 < r.reward_cap <= 1:
        raise ConfigError(f"config.rl.reward_cap={r.reward_cap}: must be in (0, 1]")
    for v in r.reward_credits:
        if not 0 <= v <= 1:
            raise ConfigError(f"config.rl.reward_credits={tuple(r.reward_credits)}: each must be in [0, 1]")
    for field in ("clip_eps_low", "clip_eps_high"):
        if not 0 <= r[field] < 1:
            raise ConfigError(f"config.rl.{field}={r[field]}: must be in [0, 1)")
    for field in ("kl_coef", "learning_rate", "weight_decay", "grad_clip", "time_budget_s", "oversample"):
        if r[field] < 0:
            raise ConfigError(f"config.rl.{field}={r[field]}: must be >= 0")
    if r.credit_assignment == "level" and r.mode != "direct":
        raise ConfigError(f"config.rl.credit_assignment='level' needs config.rl.mode='direct' (got "
                          f"{r.mode!r}): only a Direct-mode response is exactly the SID's tokens")
    if r.rollout == "beam" and r.mode != "direct":
        raise ConfigError(f"config.rl.rollout='beam' needs config.rl.mode='direct' (got {r.mode!r}): the beam "
                          "is Direct mode's decoder")
    if r.rollout == "chain" and r.mode != "reasoning":
        raise ConfigError(f"config.rl.rollout='chain' needs config.rl.mode='reasoning' (got {r.mode!r}): the "
                          "answers follow a reasoning chain")
    if r.rollout == "chain" and not r.constrained_answer:
        raise ConfigError("config.rl.rollout='chain' needs config.rl.constrained_answer=True: its answers are "
                          "drawn through the trie")
    if r.rollout == "beam" and 0 < r.beam_size < r.group_size:
        raise ConfigError(f"config.rl.beam_size={r.beam_size}: must be >= config.rl.group_size={r.group_size} "
                          "(the group is the beam's best G items)")
    if not r.rank_penalty >= 0:
        raise ConfigError(f"config.rl.rank_penalty={r.rank_penalty}: must be >= 0")
    if r.rank_penalty > 0 and r.rollout != "beam":
        raise ConfigError(f"config.rl.rank_penalty={r.rank_penalty} needs config.rl.rollout='beam': sampled "
                          "rollouts have no rank")
    if r.policy_item_head and r.mode != "direct":
        raise ConfigError(f"config.rl.policy_item_head=True needs config.rl.mode='direct' (got {r.mode!r}): it "
                          "puts Direct mode's re-ranking term into the policy")
    if r.policy_item_head and not config.eval.item_head_weight > 0:
        raise ConfigError(f"config.rl.policy_item_head=True needs config.eval.item_head_weight > 0 (got "
                          f"{config.eval.item_head_weight}): that weight is the head's share of the policy")
    if not 0 < r.future_discount <= 1:
        raise ConfigError(f"config.rl.future_discount={r.future_discount}: must be in (0, 1]")
    if not 0 <= r.target_popularity_power <= 2:
        raise ConfigError(f"config.rl.target_popularity_power={r.target_popularity_power}: must be in [0, 2]")
    if r.future_window > 1 and r.credit_assignment == "level":
        raise ConfigError(f"config.rl.future_window={r.future_window} needs config.rl.credit_assignment="
                          "'sequence': the per-level reward-to-go is defined against one target")
    if r.oversample < 1:
        raise ConfigError(f"config.rl.oversample={r.oversample}: must be >= 1")


def shares_prefix(rl) -> bool:
    """Whether the update runs each group as one shared-prefix row (config.rl.shared_prefix)."""
    if rl.shared_prefix == "auto":
        return rl.mode == "direct" or rl.rollout == "chain"
    return rl.shared_prefix == "on"
