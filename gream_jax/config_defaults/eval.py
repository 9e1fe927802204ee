"""Config section `config.eval`: Direct / Reasoning recommendation and the eval stage."""

import ml_collections

MODES = ("direct", "reasoning")
SPLITS = ("valid", "test")


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.checkpoint = ""          # model directory; "" = WORKDIR/rl/final if present, else WORKDIR/sft/final
    c.splits = SPLITS
    c.modes = MODES
    c.beam_size = 20           # constrained beam width (the reference release uses 10)
    c.top_k = 20               # items returned per user; metrics are computed for ks <= top_k
    c.ks = (1, 5, 10, 20)
    # Direct mode: > 0 re-ranks all beam_size items the beam finishes with by log P(item) + this
    # weight x log q(item), q the next-item head, and keeps the best top_k (a model trained with
    # config.train.next_item_weight > 0; the stages refuse a model without it). 0 = the SID
    # probability alone (GREAM).
    c.item_head_weight = 0.0
    # A sweep of that weight, chosen on validation (non-empty = on; 0 in the list = the SID score
    # alone): the eval stage decodes each split once, keeping the beam's items unfused, scores
    # the valid split at every weight, keeps the one with the best `select_metric` and ranks the
    # test split with it (eval/item_head_weights.md holds the table). item_head_weight stays what
    # the SFT and RL stages validate with.
    c.item_head_weights = ()
    c.select_metric = "ndcg@10"  # "recall@K" or "ndcg@K", K one of ks: what the sweep maximises
    # Users per jitted batch (a multiple of the data-parallel size); 0 = largest that fits the
    # memory budget below. Beam size and K never change to fit memory.
    c.max_batch = 0
    c.memory_budget_mb = 1024  # per device, when the device does not report its memory (CPU)
    c.memory_fraction = 0.5    # of the free device memory, when it does (GPU/TPU)
    c.prompt_bucket = 16       # prompt widths are rounded up to a multiple of this (fewer compiles)
    # Reasoning mode: sample `<think>...</think>` then the constrained beam for the SID.
    c.reasoning_users = 128    # users evaluated in reasoning mode per split (0 = all); slow on CPU
    c.reasoning_budget = 192   # max reasoning tokens before `<answer>` is forced
    c.temperature = 0.7        # 0 = greedy; the release samples at 0.7 / top-p 0.9
    c.top_p = 0.9
    c.num_samples = 1          # reasoning chains per user; > 1 also reports pass@k
    # The chain may not write `</answer>` (it belongs after `<answer>` SID, which the beam writes):
    # Office's small models wrote one after Step 5's last SID in ~40% of chains (session 22).
    c.ban_stray_answer_close = True
    # No chain completes one item's SID more than this many times (0 = no limit; level/trie-softmax
    # models, whose decoders track SIDs through the trie): a guard against repetition loops. At 3 it
    # left Beauty's looping chains looping (on other items) and cost ML-100k validation (session 22).
    c.max_item_mentions = 0
    # Reasoning chains are decoded over growing attention windows of this many KV-cache slots
    # (gream_jax/infer/windows.py): the same tokens, early steps read only the slots written so
    # far; each window compiles its own loop body. 0 = every step reads the whole cache.
    c.decode_window = 128
    c.seed_offset = 0          # reasoning rng = config.seed + seed_offset
    c.head_share = 0.2         # popularity bias: share of the catalogue counted as "head"
    return c


def validate(config) -> None:
    from gream_jax.config_defaults.base import ConfigError
    e = config.eval

    def bad(field, why):
        raise ConfigError(f"config.eval.{field}={e[field]!r}: {why}")

    if not set(e.splits) <= set(SPLITS) or not e.splits:
        bad("splits", f"must be a non-empty subset of {SPLITS}")
    if not set(e.modes) <= set(MODES) or not e.modes:
        bad("modes", f"must be a non-empty subset of {MODES}")
    if e.top_k < 1:
        bad("top_k", "must be >= 1")
    if e.beam_size < e.top_k:
        bad("beam_size", f"must be >= config.eval.top_k={e.top_k} (the beam holds the K items returned)")
    if not e.ks or any(k < 1 or k > e.top_k for k in e.ks):
        bad("ks", f"every K must be in [1, config.eval.top_k={e.top_k}]")
    for field in ("max_batch", "reasoning_users", "seed_offset", "decode_window", "max_item_mentions"):
        if e[field] < 0:
            bad(field, "must be >= 0")
    for field in ("memory_budget_mb", "prompt_bucket", "reasoning_budget", "num_samples"):
        if e[field] < 1:
            bad(field, "must be >= 1")
    if e.item_head_weight < 0:
        bad("item_head_weight", "must be >= 0 (0 = off)")
    if e.item_head_weight > 0 and config.index.collision != "item_token":
        bad("item_head_weight", f"needs an item-unique last SID token (config.index.collision='item_token', "
                                f"got {config.index.collision!r})")
    if e.item_head_weights:
        if any(float(w) < 0 for w in e.item_head_weights):
            bad("item_head_weights", "every weight must be >= 0 (0 = the SID score alone)")
        if len(set(float(w) for w in e.item_head_weights)) != len(e.item_head_weights):
            bad("item_head_weights", "weights must be distinct")
        if "valid" not in e.splits or "direct" not in e.modes:
            bad("item_head_weights", "the sweep is chosen on the valid split in Direct mode: needs 'valid' in "
                                     f"config.eval.splits (got {tuple(e.splits)}) and 'direct' in "
                                     f"config.eval.modes (got {tuple(e.modes)})")
        if config.index.collision != "item_token":
            bad("item_head_weights", f"needs an item-unique last SID token (config.index.collision='item_token', "
                                     f"got {config.index.collision!r})")
        name, _, k = str(e.select_metric).partition("@")
        if name not in ("recall", "ndcg") or not k.isdigit() or int(k) not in tuple(e.ks):
            bad("select_metric", f"must be 'recall@K' or 'ndcg@K' with K in config.eval.ks={tuple(e.ks)}")
    if not 0 < e.memory_fraction <= 1:
        bad("memory_fraction", "must be in (0, 1]")
    if e.temperature < 0:
        bad("temperature", "must be >= 0 (0 = greedy)")
    if not 0 < e.top_p <= 1:
        bad("top_p", "must be in (0, 1]")
    if e.num_samples > 1 and e.temperature == 0:
        bad("num_samples", "greedy decoding (temperature=0) gives identical samples; set "
                           "config.eval.temperature > 0 or num_samples=1")
    if not 0 < e.head_share < 1:
        bad("head_share", "must be in (0, 1)")
