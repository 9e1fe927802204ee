"""Shared experiment recipes that several `configs/*.py` files apply before their own overrides."""

import importlib.util
import os


def small_from_scratch(config) -> None:
    """The measured small-model recipe for 2 CPU cores (baselines.md, docs/results.md "ml100k").

    A from-scratch Qwen3 with 2 layers x 64 wide over a 1,000-token text BPE, trained mostly on
    dense seqrec windows (every item of a 21-item window is a target). Prompt tasks and reasoning
    chains get a small share. Learning rate 2e-3 with warm-up and cosine decay: many small, fast
    updates beat a wider model in the same time. Each dataset config sets its own steps, task
    counts and validation cadence after calling this.
    """
    m = config.model
    m.num_layers = 2
    m.hidden_size = 64
    m.num_heads = 4
    m.num_kv_heads = 4
    m.head_dim = 16
    m.intermediate_size = 256
    m.max_position_embeddings = 512
    m.tokenizer_vocab_size = 1000      # text BPE; a smaller softmax = faster dense steps
    # The level softmax (gream_jax/model/trie_softmax.py): an SID token is trained against its own
    # SID level only (the item-unique level against every item), never against the whole
    # vocabulary. Measured (docs/results.md "Session 6"): ML-100k SFT, seeds 0 / 1, valid R@10
    # .1506 / .1612 vs .1421 / .1474 for the vocabulary softmax (test .1336 / .1315 vs .1262 /
    # .1368, within noise); Beauty: a 3.7x cheaper loss head, test R@10 .0493 vs .0323 (4,000 users).
    m.sid_softmax = "level"
    config.tasks.dense_seqrec = True
    config.tasks.reasoning_examples = 600
    config.tasks.reasoning_ratio = 0.03
    t = config.train
    t.batch_size = 32                  # rows of 128 tokens: ~2 dense windows per row
    t.seq_len = 128
    # Reasoning chains are ~500 tokens: their own row length and rows per update.
    t.reasoning_seq_len = 512
    t.reasoning_batch_size = 8
    t.lr = 2e-3
    t.warmup_steps = 60
    # Validate, select and export an EMA of the weights (docs/results.md "EMA"): on ML-100k, same
    # seed, best valid N@10 .0691 vs .0628 for the raw weights, test R@10 .1336 vs .1273.
    t.ema_decay = 0.995
    t.log_every = 50


def small_catalogue(config) -> None:
    """The whole measured recipe for a catalogue of a few thousand items on 2 CPU cores: index,
    model, tasks, SFT, Direct-mode eval and SRPO (ML-100k's, where every choice below was measured,
    docs/results.md "ml100k"; configs/office.py and configs/industrial.py apply it as it is, with
    SFT validation on a 2,000-user subset; their figures are the "office" / "industrial" rows there).
    Dataset configs set their data fields first and may override after.
    """
    # --- index (issue 10 owner): text+collaborative embeddings, 2 balanced levels x 32 codes, then
    # one item-unique token. Measured with a small from-scratch generator (baselines.md): test
    # R@10 0.132 / N@10 0.059 (SASRec's level) vs 0.100 / 0.045 for 3x32 + rank suffix and 0.085
    # for text-only 3x32; 32 codes because 1,682 items over 256 codes leave ~6 items per code.
    config.index.embedding = "text+collaborative"
    config.index.codes_per_level = (32, 32)
    config.index.collision = "item_token"
    # --- model, tasks, train (SFT owner): the measured small-model recipe (baselines.md): a
    # from-scratch Qwen3 2 layers x 64 wide, trained mostly on dense seqrec windows (every item of
    # a 21-item window is a target), lr 2e-3 warm-up + cosine, many small fast updates, and the
    # best-validation checkpoint kept (a constant lr overfits after a few minutes).
    small_from_scratch(config)
    # The prompt tasks and the reasoning chains at a small share (~10% of the tokens): the model is
    # too small to gain Direct-mode accuracy from them, but they teach the formats later stages use.
    config.tasks.examples = {"seqrec": 0, "item2index": 300, "index2item": 300, "fusionseqrec": 200,
                             "itemsearch": 200, "preferenceobtain": 100}
    # Reasoning chains at 0.3 reasoning batches per alignment batch (GREAM's linear ramp; ~19% of
    # the steps), 2,000 chains, 300 more steps so the alignment stream keeps its ~1,550 steps
    # (docs/results.md "Reasoning mode that works", session 12): at the recipe's 0.03 the model saw
    # ~250 chains and wrote 10-token fragments in Reasoning mode (test R@10 .023, 128 users).
    config.tasks.reasoning_ratio = 0.3
    config.tasks.reasoning_examples = 2000
    # GREAM's full chains stay the default. `--config.tasks.reasoning_style=compact` (the five stages in
    # SIDs and attribute words, ~1/3 of the tokens; docs/results.md "Compact chains", session 20) is
    # the setting for Reasoning mode: ML-100k seeds 6 / 7 test N@10 .0345 -> .0536 (+.0191, s.e.
    # .0041), every chain well formed; but Direct mode at the update validation keeps, seeds 0 / 6 / 7:
    # valid -.0001 (.0027), test -.0038 (.0023), and seed 0's fresh `all` fell to .1166 / .0579.
    config.train.steps = 1900
    config.eval.reasoning_budget = 512     # a chain is ~400 tokens; 192 would cut most of them
    config.train.max_minutes = 0.0
    config.train.checkpoint_every = 125
    config.train.eval_every = 125
    # The next-item head (as configs/beauty.py; docs/results.md "next-item head"): an all-items
    # softmax at each SID's first code in training, and Direct mode's 50 beam items re-ranked by
    # log P(item) + 2 log q(item). On ML-100k the change is within noise (fresh `all`, seeds 0 / 1:
    # test R@10 / N@10 .1368 / .0677 and .1294 / .0630, against .1336 / .0669 and .1315 / .0661
    # without it; s.e. .011 / .006); on Beauty, where the standard error is 7x smaller, it lifts
    # test R@10 from .0523 to .0642.
    config.train.next_item_weight = 1.0
    config.eval.item_head_weight = 2.0
    config.eval.beam_size = 50
    # --- rl (issue 12 owner): Direct-mode SRPO bounded to 10 min (direct_srpo).
    direct_srpo(config)
    config.rl.eval_every = 10
    config.rl.checkpoint_every = 10


def small_catalogue_smoke(config) -> None:
    """`small_catalogue` shrunk for `:smoke` (about three minutes on a 2-core CPU for ML-100k): 150
    updates with no intermediate validation, three RL steps, beam 20."""
    t = config.train
    t.steps = 150
    t.max_minutes = 0.0
    t.warmup_steps = 20
    t.log_every = 25
    t.checkpoint_every = 75
    t.eval_every = 0
    t.eval_users = 200
    shrink_srpo_for_smoke(config)
    config.eval.beam_size = 20


def direct_srpo(config) -> None:
    """SRPO in Direct mode (the SID alone) for the small model on a 2-core CPU: reasoning rollouts of
    ~500-token chains x 10 per prompt do not fit. G = 10 and lr 2e-6 as in GREAM; bounded by wall
    time. rl/final is the best of the SFT model and the RL steps on validation, an RL step only on a
    paired gain of 2 standard errors.

    Traced on seven ML-100k SFT models (docs/results.md "Session 21", `python -m gream_jax.eval.rl_trace`):
    at the earlier scaled lr 2e-5 every run drifted (KL .13-.21 by step 150), pooled test NDCG@10
    -.0043 (s.e. .0014) by step 40 and -.0095 (.0026) by 150, validation -.0063 (.0025) by 150, and
    the margin-free rule kept an RL step in 5 of 7 runs, each a noise pick that lost on test (pooled
    -.0019, s.e. .0010); at 2e-6 (KL ~.005; seven models) the pooled trajectory stays within .0013 of
    the SFT model on both splits, never beyond noise."""
    r = config.rl
    r.mode = "direct"
    r.batch_prompts = 32
    r.mini_batch_prompts = 16
    r.ppo_epochs = 2
    r.learning_rate = 2e-6
    r.warmup_steps = 2
    r.steps = 150
    r.time_budget_s = 600.0
    r.select_min_z = 2.0              # see train/rl_selection.py


def reasoning_srpo(config) -> None:
    """SRPO in Reasoning mode for the small model on a 2-core CPU, with chain rollouts
    (`config.rl.rollout="chain"`, train/srpo_chain.py): per prompt one chain sampled as the eval
    samples it (config.eval: T 0.7, top-p 0.9, 512 tokens), then G = 10 answers after it at
    T 1.0 through the trie, the loss on the answers. 16 prompts per step (~60 s alone), 25 steps,
    lr 5e-5, the step kept by Reasoning-mode validation on all users every 10 steps (~2 min each).

    Measured on ML-100k (docs/results.md "Session 16"), seeds 0 / 1, against the SFT model on the
    same 943 validation users: Reasoning N@10 +.0117 / +.0110 (s.e. ~.005), where GREAM's rollouts
    (G whole chains, every token trained; `--config.rl.rollout=sample`) lowered it at every check
    (session 12: -.0093 at lr 1e-4; session 15: .0358 -> .0294 at 5e-5), teaching the chain's format
    instead of the answer. On test it does not follow (see the results)."""
    r = config.rl
    r.mode = "reasoning"
    r.rollout = "chain"
    r.select_mode = "reasoning"
    r.max_think_tokens = 512          # whole-chain rollouts (rollout="sample"); chains use eval's budget
    r.temperature = 1.0               # the answers (GREAM's rollout temperature)
    r.top_p = 1.0
    r.batch_prompts = 16
    r.mini_batch_prompts = 8
    r.rollout_chunk_prompts = 16
    r.ppo_epochs = 2
    r.learning_rate = 5e-5
    r.steps = 25
    r.eval_users = 0                  # select on eval.reasoning_users' users: all of them (below)
    r.eval_every = 10
    r.checkpoint_every = 5
    r.time_budget_s = 3600.0
    # The measured runs above selected with no paired test (a research recipe: what RL does is the
    # question); rl/trace.jsonl has every validation for `python -m gream_jax.eval.rl_trace`.
    r.select_min_z = 0.0
    config.eval.reasoning_budget = max(int(config.eval.reasoning_budget), r.max_think_tokens)
    # Reasoning mode on every user, in RL's selection and in the eval stage: on 200 users a
    # validation's pick did not hold on all 943 (session 12).
    config.eval.reasoning_users = 0


def heldout_reasoning_srpo(config) -> None:
    """`reasoning_srpo` on transitions SFT never fitted: SFT holds out each user's last training
    item (`train.holdout_last_targets=1`; validation and test histories keep it) and SRPO draws its
    prompts from exactly those transitions (`rl.prompt_positions=1`), 40 steps, the step kept by
    Reasoning-mode validation on all users at 20 and 40. One config for the whole pipeline (sft,
    rl, eval, all).

    Measured on ML-100k (docs/results.md "Session 17", "Session 18"), Reasoning-mode test N@10
    against the holdout SFT model on the same 943 users: seeds 0 / 1 / 2 +.0042 / +.0043 / +.0072
    (s.e. ~.004), seeds 3 / 4 / 5 (end to end from this recipe) -.0033 / -.0004 / 0 (seed 5 kept
    the SFT model); six seeds pooled +.0020 (s.e. .0019): within noise, validation +.0050 (.0021)
    on the steps validation itself picked; seeds 6 / 7 +.0029 / -.0015 (session 19). Direct mode within
    noise. Without the holdout (session 16) validation rose as much and test did not (+.0026 / -.0093).
    The SFT model it starts from is the update Direct-mode validation keeps (375 / 750 / 875 of 1,900
    on seeds 6 / 7 / 0), early in the reasoning curriculum, with chains not yet learned; RL from the
    last update instead (`--config.rl.init_from=sft/step_1900` after `--config.stage=export
    --config.train.export_step=1900`) keeps the chains well formed and gives test -.0003 (s.e. .0029).
    Against SFT that trained on the held-out transitions (session 20, seeds 6 + 7) the RL model is level on
    validation (-.0010, s.e. .0037) and lower on test (-.0042, .0035): RL recovers what the holdout cost."""
    reasoning_srpo(config)
    config.train.holdout_last_targets = 1
    r = config.rl
    r.prompt_positions = 1
    r.steps = 40
    r.eval_every = 20


def long_reasoning_chains(config) -> None:
    """Room for the reasoning chains of catalogues with long titles and category paths (Beauty,
    Industrial; docs/results.md "Session 14"). A chain quotes five history items with their titles
    and attributes: its response averages 404 tokens on ML-100k and 280 on Office but 452 (p99 608)
    on Beauty and 509 (p99 610) on Industrial, so at reasoning_seq_len 512 36% and 59% of the chains
    were longer than a row and skipped, and the eval budget (512; Beauty's 192) cut long ones short."""
    config.train.reasoning_seq_len = 768
    config.model.max_position_embeddings = 1024
    config.eval.reasoning_budget = 640
    config.rl.max_think_tokens = 640


def shrink_srpo_for_smoke(config) -> None:
    """Three RL steps of 8 prompts, no intermediate validation or time bound (`:smoke` configs)."""
    r = config.rl
    r.steps = 3
    r.batch_prompts = 8
    r.mini_batch_prompts = 8
    r.eval_every = 0
    r.time_budget_s = 0.0


DATASETS = ("beauty", "industrial", "office", "ml100k")

# FSDP x tensor rules, written out so they can be edited per run (`--config.mesh.rules=...`):
# weights' `embed` dimension over fsdp, heads/MLP/vocabulary over tensor, batch over data+fsdp.
MESH_RULES = (
    ("batch", ("data", "fsdp")), ("length", None), ("embed", "fsdp"), ("vocab", "tensor"),
    ("mlp", "tensor"), ("heads", "tensor"), ("kv_heads", "tensor"), ("head_dim", None),
    ("layers", None), ("norm", None), ("items", ("data", "fsdp")), ("features", None),
    ("codes", None), ("cache_length", None), ("lora_rank", None),
)


def load_config_module(configs_dir: str, name: str):
    """Imports `<configs_dir>/<name>.py` (config files are loaded by path, not as a package)."""
    spec = importlib.util.spec_from_file_location(f"gream_configs_{name}",
                                                  os.path.join(configs_dir, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def qwen3_config(configs_dir: str, size_name: str, hf_shape: dict, mesh: dict, train: dict,
                 arg: str | None):
    """The dataset config in `configs_dir` (`arg`, default beauty) with a Qwen3 backbone of
    `hf_shape`, its mesh and the reference's SFT settings (configs/qwen3_*.py)."""
    dataset = arg or "beauty"
    if dataset not in DATASETS:
        raise ValueError(f"configs/qwen3_{size_name}.py: unknown dataset {dataset!r}; use one of {DATASETS}")
    config = load_config_module(configs_dir, dataset).get_config(None)
    config.name = f"{dataset}_qwen3_{size_name}"
    m = config.model
    m.checkpoint = ""   # --config.model.checkpoint=/path/to/Qwen3-<size> (HF directory)
    for field in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
                  "intermediate_size", "rope_theta", "rms_norm_eps", "tie_word_embeddings",
                  "max_position_embeddings"):
        m[field] = hf_shape[field]
    m.param_dtype = "float32"     # master weights
    m.dtype = "bfloat16"          # compute
    m.remat = "dots_no_batch"     # keep weight matmul outputs, recompute attention/elementwise
    m.scan_layers = True
    m.attention = "xla"           # GPU: --config.model.attention=cudnn (fused flash attention)
    m.vocab_pad_multiple = 128
    for axis, size in mesh.items():
        config.mesh[axis] = size
    config.mesh.rules = MESH_RULES
    t = config.train
    t.compute_dtype = "bfloat16"
    t.lr = 5e-5
    t.end_lr_factor = 0.0
    t.seq_len = 2560
    t.batch_size = train["batch_size"]
    t.grad_accum = train["grad_accum"]
    t.steps = 2000
    t.warmup_steps = t.steps // 10
    return config
