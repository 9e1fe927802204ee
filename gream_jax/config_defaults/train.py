"""Config section `config.train`: the SFT trainer (optimiser, batching, checkpoints, validation)."""

import ml_collections

SELECT_METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.steps = 2000                # optimizer updates
    c.max_minutes = 0.0           # > 0: stop early after this wall time (the schedule still spans `steps`)
    c.batch_size = 64             # packed rows per update (global, all devices)
    c.grad_accum = 1              # micro-batches per update; batch_size must divide by it
    c.seq_len = 128               # packed row length in tokens (alignment stream)
    # Reasoning chains are long: their stream has its own row length and rows per update (a second
    # compiled shape); the defaults keep the tokens per update close to the alignment stream's.
    c.reasoning_seq_len = 512
    c.reasoning_batch_size = 16
    c.lr = 2e-3
    c.warmup_steps = 100
    c.end_lr_factor = 0.05        # cosine decays to lr * end_lr_factor
    c.weight_decay = 0.01
    c.b1 = 0.9
    c.b2 = 0.98
    c.grad_clip = 1.0
    # EMA of the parameters (gream_jax/train/ema.py): validated, selected and exported instead of
    # the raw weights when > 0 (e.g. 0.995 averages the last ~200 updates); 0 = off.
    c.ema_decay = 0.0
    c.eval_raw = False            # with EMA on: also validate the raw weights (logged as valid_raw/*)
    # Dropout on embeddings and residual branches during SFT only (a regulariser for small
    # from-scratch models, as in SASRec; Qwen checkpoints were pretrained without it): 0 = off.
    c.dropout_rate = 0.0
    # SFT trains on each user's training part without its last `holdout_last_targets` items (as
    # targets and as context); validation and test histories keep them. They are transitions SFT
    # never fitted, for RL prompts (`config.rl.prompt_positions` = the same N). 0 = train on all.
    c.holdout_last_targets = 0
    # Repeat negatives (gream_jax/train/sft_data.py `repeat_negative_example`): > 0 adds, for a
    # `repeat_negative_share` of the dense windows, a copy cut after a random item with one of its
    # own items appended, and this weight times -log(1 - p(that item's whole SID)) to the loss, so
    # the model learns not to recommend what the user already has (ML-100k and Beauty users never
    # return to an item; a CE-only model put 2.5 of its top 10 there). Needs
    # config.index.collision="item_token" (an item-unique last token). 0 = off.
    c.repeat_unlikelihood = 0.0
    c.repeat_negative_share = 0.5
    # "sid": the unlikelihood of the negative's whole SID (the Direct-mode score); "last": of its
    # item-unique last token given its prefix codes only.
    c.repeat_unlikelihood_tokens = "sid"
    # Auxiliary next-item objective (gream_jax/model/trie_softmax.py `next_item_terms`): > 0 adds
    # this weight times -log p(item) over all items at the position that predicts each target
    # SID's first code (SASRec's objective on the state that decides the first code). Needs
    # config.model.sid_softmax "trie"/"level" and config.index.collision="item_token". 0 = off.
    c.next_item_weight = 0.0
    c.compute_dtype = "float32"   # "bfloat16": forward/backward in bf16, float32 master weights
    # Throughput levers (see gream_jax/train/sft.py). loss_chunk_tokens > 0: the loss computes the LM
    # head + log-softmax per chunk of this many tokens (recomputed in the backward pass) instead of
    # materialising [rows, seq, vocab] float32 logits; same loss and gradients. causal_fast_path: a
    # micro-batch with no padding and one example per row uses mask-free causal attention (cuDNN's
    # causal kernel on GPU), chosen at run time, at the cost of compiling the step twice.
    c.loss_chunk_tokens = 0
    c.causal_fast_path = False
    c.log_every = 50
    c.checkpoint_every = 200      # orbax checkpoint of the full state (resume)
    c.keep_checkpoints = 2
    # --config.stage=export (gream_jax/train/sft_export.py): the saved SFT update to export as a model
    # directory (one of the kept checkpoints or the best one) and where ("" = WORKDIR/sft/step_<N>).
    c.export_step = -1
    c.export_dir = ""
    c.async_checkpoints = True
    c.eval_every = 250            # validation on the VALID split (0 = only at the end)
    c.eval_users = 0              # 0 = all validation users; >0 = a fixed, seeded subset
    # The validation figure that picks the exported update (Direct mode on the valid split).
    c.select_metric = "recall@10"
    # Users for the valid/test figures of the exported model in the SFT summary (0 = all; the eval
    # stage always uses all): large catalogues (Beauty: 22k users) take minutes per full pass on CPU.
    c.final_eval_users = 0
    # Validation decodes with config.eval's beam_size / top_k (the eval stage's own settings).
    return c


def validate(config) -> None:
    from gream_jax.config_defaults.base import ConfigError
    t = config.train
    if getattr(config, "stage", None) == "export" and int(t.export_step) < 0:
        raise ConfigError(f"config.train.export_step={t.export_step}: --config.stage=export needs the SFT update "
                          "to export (>= 0; the kept ones are the directory names under WORKDIR/sft/checkpoints "
                          "and WORKDIR/sft/best)")
    for name in ("steps", "batch_size", "grad_accum", "seq_len", "reasoning_seq_len", "reasoning_batch_size",
                 "log_every", "keep_checkpoints"):
        if int(t[name]) < 1:
            raise ConfigError(f"config.train.{name}={t[name]}: must be >= 1")
    if not isinstance(t.causal_fast_path, bool):
        raise ConfigError(f"config.train.causal_fast_path={t.causal_fast_path!r}: must be True or False")
    for name in ("checkpoint_every", "eval_every", "eval_users", "final_eval_users", "warmup_steps",
                 "loss_chunk_tokens"):
        if int(t[name]) < 0:
            raise ConfigError(f"config.train.{name}={t[name]}: must be >= 0")
    if t.batch_size % t.grad_accum:
        raise ConfigError(f"config.train.batch_size={t.batch_size}: must be divisible by "
                          f"config.train.grad_accum={t.grad_accum}")
    if t.reasoning_batch_size % t.grad_accum:
        raise ConfigError(f"config.train.reasoning_batch_size={t.reasoning_batch_size}: must be divisible "
                          f"by config.train.grad_accum={t.grad_accum}")
    if t.lr <= 0:
        raise ConfigError(f"config.train.lr={t.lr}: must be > 0")
    if t.warmup_steps >= t.steps:
        raise ConfigError(f"config.train.warmup_steps={t.warmup_steps}: must be < config.train.steps={t.steps}")
    if t.compute_dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"config.train.compute_dtype={t.compute_dtype!r}: must be float32 or bfloat16")
    if not 0 <= t.end_lr_factor <= 1:
        raise ConfigError(f"config.train.end_lr_factor={t.end_lr_factor}: must be in [0, 1]")
    if t.repeat_unlikelihood_tokens not in ("sid", "last"):
        raise ConfigError(f"config.train.repeat_unlikelihood_tokens={t.repeat_unlikelihood_tokens!r}: "
                          f"must be 'sid' or 'last'")
    if not 0.0 < float(t.repeat_negative_share) <= 1.0:
        raise ConfigError(f"config.train.repeat_negative_share={t.repeat_negative_share}: must be in (0, 1]")
    if float(t.repeat_unlikelihood) < 0:
        raise ConfigError(f"config.train.repeat_unlikelihood={t.repeat_unlikelihood}: must be >= 0 (0 = off)")
    if float(t.next_item_weight) < 0:
        raise ConfigError(f"config.train.next_item_weight={t.next_item_weight}: must be >= 0 (0 = off)")
    if float(t.next_item_weight) > 0 and (config.index.collision != "item_token"
                                          or config.model.sid_softmax == "vocab"):
        raise ConfigError(f"config.train.next_item_weight={t.next_item_weight} needs an item-unique last SID token "
                          f"(config.index.collision='item_token', got {config.index.collision!r}) and "
                          f"config.model.sid_softmax 'trie' or 'level' (got {config.model.sid_softmax!r})")
    if float(t.repeat_unlikelihood) > 0 and config.index.collision != "item_token":
        raise ConfigError(f"config.train.repeat_unlikelihood={t.repeat_unlikelihood} needs an item-unique last SID "
                          f"token, i.e. config.index.collision='item_token' (got {config.index.collision!r})")
    if float(t.repeat_unlikelihood) > 0 and not config.tasks.dense_seqrec:
        raise ConfigError(f"config.train.repeat_unlikelihood={t.repeat_unlikelihood} acts on dense seqrec windows "
                          f"only; set config.tasks.dense_seqrec=True or the weight to 0")
    if config.model.sid_softmax != "vocab" and (int(t.loss_chunk_tokens) or float(t.repeat_unlikelihood)):
        raise ConfigError(f"config.model.sid_softmax={config.model.sid_softmax!r} computes its own head rows and "
                          "does not combine with config.train.loss_chunk_tokens > 0 or config.train.repeat_unlikelihood > 0; "
                          "set those to 0")
    if not isinstance(t.holdout_last_targets, int) or t.holdout_last_targets < 0:
        raise ConfigError(f"config.train.holdout_last_targets={t.holdout_last_targets!r}: must be a non-negative int")
    if not 0.0 <= float(t.dropout_rate) < 1.0:
        raise ConfigError(f"config.train.dropout_rate={t.dropout_rate}: must be in [0, 1) (0 = no dropout)")
    if not 0.0 <= float(t.ema_decay) < 1.0:
        raise ConfigError(f"config.train.ema_decay={t.ema_decay}: must be in [0, 1) (0 = no EMA)")
    if t.select_metric not in SELECT_METRICS:
        raise ConfigError(f"config.train.select_metric={t.select_metric!r}: must be one of {SELECT_METRICS}")
    if t.max_minutes < 0:
        raise ConfigError(f"config.train.max_minutes={t.max_minutes}: must be >= 0")
