"""Shared experiment recipes that several `configs/*.py` files apply before their own overrides."""


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
    t.log_every = 50
