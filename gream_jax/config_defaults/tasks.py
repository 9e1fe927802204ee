"""Config section `config.tasks`: which SFT examples are built, how many, and how they are mixed.

Two streams feed SFT (GREAM's two phases): the *alignment* stream (dense seqrec windows plus the
LC-Rec prompt tasks) and the *reasoning* stream (five-stage reverse-reasoning chains). The
curriculum decides, per step, which stream a batch comes from.
"""

import ml_collections

PROMPT_TASKS = ("seqrec", "item2index", "index2item", "fusionseqrec", "itemsearch", "preferenceobtain")
CURRICULA = ("linear_ramp", "uniform_mix", "sequential")
DIRECT_PROMPTS = ("dense", "chat")


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Dense seqrec: windows of `max_history + 1` consecutive training items written as SIDs,
    # causal loss on every SID token after the first item (SASRec-style, one target per position).
    c.dense_seqrec = True
    # Windows per user per epoch: ends are spaced `dense_stride` items apart from a random offset;
    # 0 = half the window (each position is a target about twice per epoch).
    c.dense_stride = 0
    # Per prompt task: examples drawn per epoch (-1 = all, 0 = task off). Templates are re-drawn
    # every epoch (the reference builds three passes with fresh templates).
    c.examples = ml_collections.ConfigDict({
        "seqrec": 2000, "item2index": 1000, "index2item": 1000, "fusionseqrec": 1000,
        "itemsearch": 1000, "preferenceobtain": 500})
    # Reasoning stream: examples drawn per epoch (-1 = all targets at positions 4..len-3).
    c.reasoning_examples = 2000
    c.reasoning_min_history = 4
    # Step 4 of a chain names the target's semantic group by an example item's SID (the group's
    # most frequent training item other than the target and the history) instead of its number;
    # only for a trie / level softmax model (config.model.sid_softmax != "vocab", which writes the
    # group token itself). tasks/reasoning.py chain_text.
    c.reasoning_group_example = False
    # What a chain is written around (tasks/reasoning.py): "reverse" (GREAM) the target itself, a
    # rationale the model must guess at inference; "forward" the latest history item, so every
    # stage is a function of the history the model sees.
    c.reasoning_direction = "reverse"
    # How a chain is written: "full" (evidence items with titles and attributes, ~400 tokens) or
    # "compact" (SIDs and attribute words only, about a third of the tokens; tasks/reasoning.py;
    # docs/results.md "Compact chains": better Reasoning mode, Direct mode leaning lower).
    c.reasoning_style = "full"
    c.recency_decay = 0.8         # preference aggregation weight per step back in the history
    # Curriculum over the two streams (pure function of the step).
    c.curriculum = "linear_ramp"  # one of CURRICULA
    # Reasoning batches per alignment batch (the reference's N_reason / N_align); 0 = no reasoning.
    c.reasoning_ratio = 0.1
    # Prompt for Direct mode and the dense windows: "dense" = BOS + history SIDs (what dense
    # training teaches a from-scratch model); "chat" = a seqrec chat template (pretrained backbones).
    c.direct_prompt = "dense"
    return c


def validate(config) -> None:
    from gream_jax.config_defaults.base import ConfigError
    t = config.tasks
    for name in t.examples.keys():
        if name not in PROMPT_TASKS:
            raise ConfigError(f"config.tasks.examples.{name}: unknown task; known: {PROMPT_TASKS}")
        if int(t.examples[name]) < -1:
            raise ConfigError(f"config.tasks.examples.{name}={t.examples[name]}: must be -1 (all) or >= 0")
    if t.reasoning_examples < -1:
        raise ConfigError(f"config.tasks.reasoning_examples={t.reasoning_examples}: must be -1 (all) or >= 0")
    if t.curriculum not in CURRICULA:
        raise ConfigError(f"config.tasks.curriculum={t.curriculum!r}: must be one of {CURRICULA}")
    if t.reasoning_ratio < 0:
        raise ConfigError(f"config.tasks.reasoning_ratio={t.reasoning_ratio}: must be >= 0")
    if t.direct_prompt not in DIRECT_PROMPTS:
        raise ConfigError(f"config.tasks.direct_prompt={t.direct_prompt!r}: must be one of {DIRECT_PROMPTS}")
    if t.dense_stride < 0:
        raise ConfigError(f"config.tasks.dense_stride={t.dense_stride}: must be >= 0")
    if not 0 < t.recency_decay <= 1:
        raise ConfigError(f"config.tasks.recency_decay={t.recency_decay}: must be in (0, 1]")
    if not isinstance(t.reasoning_group_example, bool):
        raise ConfigError(f"config.tasks.reasoning_group_example={t.reasoning_group_example!r}: must be True or False")
    if t.reasoning_group_example and str(config.model.sid_softmax) == "vocab":
        raise ConfigError("config.tasks.reasoning_group_example=True needs config.model.sid_softmax != 'vocab': a "
                          "vocabulary-softmax model's chains name the group by its own SID token")
    from gream_jax.tasks.reasoning import DIRECTIONS, STYLES
    if t.reasoning_direction not in DIRECTIONS:
        raise ConfigError(f"config.tasks.reasoning_direction={t.reasoning_direction!r}: must be one of {DIRECTIONS}")
    if t.reasoning_style not in STYLES:
        raise ConfigError(f"config.tasks.reasoning_style={t.reasoning_style!r}: must be one of {STYLES}")
    if t.reasoning_min_history < 1:
        raise ConfigError(f"config.tasks.reasoning_min_history={t.reasoning_min_history}: must be >= 1")
    if not t.dense_seqrec and all(int(v) == 0 for v in t.examples.values()):
        raise ConfigError("config.tasks: dense_seqrec is off and every prompt task has 0 examples; "
                          "nothing to train on")
