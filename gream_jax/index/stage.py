"""The `index` stage: prepared data -> item text -> embeddings -> RQ-KMeans -> unique SIDs.

Writes `WORKDIR/index/`: `sids.npz` + `sids.json` (the SID artifact, reloaded and checked before
the stage returns), `trie.npz` (prefix trie for constrained decoding), `report.json` (+ printed),
`embeddings.npy` (what was quantised), `utilisation.png`, `texts.jsonl` (the fused item texts),
`llm_rewrite.jsonl` (cache, when config.index.llm_rewrite_url is set) and TensorBoard scalars in `tb/`.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
from absl import logging

from gream_jax import mesh as mesh_lib
from gream_jax.index import collisions, embeddings as emb_lib, report as report_lib, rq_kmeans, text as text_lib
from gream_jax.index.sid import SemanticIds
from gream_jax.utils import io
from gream_jax.utils.logging import SummaryWriter


def kmeans_options(index_cfg) -> rq_kmeans.KMeansOptions:
    return rq_kmeans.KMeansOptions(
        codes_per_level=tuple(int(k) for k in index_cfg.codes_per_level), iters=int(index_cfg.kmeans_iters),
        balanced=bool(index_cfg.balanced), balance_slack=int(index_cfg.balance_slack),
        sinkhorn_iters=int(index_cfg.sinkhorn_iters), sinkhorn_warm_iters=int(index_cfg.sinkhorn_warm_iters),
        sinkhorn_epsilon=float(index_cfg.sinkhorn_epsilon),
        init_sample_per_code=int(index_cfg.init_sample_per_code), tol=float(index_cfg.kmeans_tol),
        stay_bonus=float(index_cfg.stay_bonus),
        settle_share=None if float(index_cfg.settle_share) < 0 else float(index_cfg.settle_share),
        settle_patience=int(index_cfg.settle_patience))


def build_semantic_ids(embeddings: np.ndarray, index_cfg, seed: int, mesh=None,
                       rules=mesh_lib.DEFAULT_RULES) -> tuple[SemanticIds, dict]:
    """Quantises `embeddings [n, d]` and resolves collisions; returns (SIDs, report pieces)."""
    opts = kmeans_options(index_cfg)
    t0 = time.perf_counter()
    res = rq_kmeans.fit_rq_kmeans(embeddings, opts, seed, mesh, rules)
    fit_s = time.perf_counter() - t0
    n_levels = len(opts.codes_per_level)
    last_residual = embeddings - rq_kmeans.reconstruct(res.codes, res.codebooks, n_levels - 1)
    residual_sq = np.sum((embeddings - rq_kmeans.reconstruct(res.codes, res.codebooks)) ** 2, axis=1)
    before = collisions.collision_stats(res.codes)
    codes, lengths, level_sizes, resolve_stats = collisions.resolve(
        res.codes, index_cfg.collision, opts.codes_per_level, last_residual=last_residual,
        last_codebook=res.codebooks[-1], residual_sq=residual_sq)
    sids = SemanticIds(codes=codes, lengths=lengths, level_sizes=level_sizes)
    after = collisions.collision_stats(codes)
    pieces = {"quant_codes": res.codes, "before": before, "after": after, "level_mse": res.level_mse,
              "extra": {"kmeans_seconds": fit_s, "lloyd_iters": res.lloyd_iters.tolist(),
                        "collision_scheme": index_cfg.collision, **resolve_stats}}
    return sids, pieces


def run_index(config, workdir: str, devices=None) -> dict:
    """Stage entry point (see module docstring). `devices` (tests) restricts the mesh."""
    from gream_jax.data.prepare import load_prepared

    c = config.index
    out_dir = os.path.join(workdir, "index")
    os.makedirs(out_dir, exist_ok=True)
    data, split = load_prepared(workdir, config)
    mesh = mesh_lib.make_mesh(config.mesh, devices)
    rules = mesh_lib.rules_from_config(config.mesh)

    items = data.items
    if c.llm_rewrite_url:
        from gream_jax.index import llm_rewrite
        client = llm_rewrite.ChatClient(c.llm_rewrite_url, c.llm_rewrite_model, int(c.llm_rewrite_retries),
                                        float(c.llm_rewrite_timeout_s))
        rewritten = llm_rewrite.rewrite_descriptions(items, client, os.path.join(out_dir, "llm_rewrite.jsonl"))
        items = [dataclasses.replace(it, description=d) for it, d in zip(items, rewritten)]
    texts = text_lib.item_texts(items, tuple(c.text_fields), c.text_max_chars, c.review_sentences)
    empty = text_lib.empty_items(texts)
    if len(empty):
        logging.warning("index: %d of %d items have no text (first: internal %d, raw id %s)",
                        len(empty), len(texts), empty[0], data.item_ids[empty[0]])
    io.write_jsonl(os.path.join(out_dir, "texts.jsonl"),
                   ({"id": i, "raw_id": r, "text": t} for i, (r, t) in enumerate(zip(data.item_ids, texts))))

    t0 = time.perf_counter()
    vectors = emb_lib.item_embeddings(c.embedding, texts, split.train, data.n_items, config, mesh, rules,
                                      cache_dir=out_dir)
    embed_s = time.perf_counter() - t0
    with io.atomic_open(os.path.join(out_dir, "embeddings.npy"), "wb") as f:
        np.save(f, vectors)

    sids, pieces = build_semantic_ids(vectors, c, config.seed, mesh, rules)
    if pieces["after"]["collision_rate"] != 0.0:
        raise RuntimeError(f"index: {pieces['after']['colliding_items']} items still collide after "
                           f"{c.collision}; this is a bug in gream_jax/index/collisions.py")
    sids.save(out_dir, extra_meta={"item_ids": list(data.item_ids), "dataset": data.name,
                                   "config": c.to_dict(), "seed": config.seed,
                                   "tokens_example": sids.item_tokens(0)})
    sids = SemanticIds.load(out_dir, n_items=data.n_items, item_ids=data.item_ids, dataset=data.name)
    trie_written = _write_trie(sids, out_dir)

    report = report_lib.build_report(
        n_items=data.n_items, quant_codes=pieces["quant_codes"], sid_codes=sids.codes, lengths=sids.lengths,
        level_sizes=sids.level_sizes, before=pieces["before"], after=pieces["after"],
        level_mse=pieces["level_mse"], embeddings=vectors,
        extra={**pieces["extra"], "dataset": data.name, "embedding": c.embedding,
               "embedding_dim": int(vectors.shape[1]), "embedding_seconds": embed_s,
               "empty_text_items": int(len(empty)), "balanced": bool(c.balanced),
               "mesh_devices": int(mesh.devices.size), "trie_written": trie_written,
               "example_sid": sids.item_string(0)})
    io.write_json(os.path.join(out_dir, "report.json"), report)
    report_lib.plot_utilisation(sids.codes, sids.lengths, sids.level_sizes, os.path.join(out_dir, "utilisation.png"))
    text = report_lib.format_report(report)
    print(text, flush=True)
    writer = SummaryWriter(os.path.join(out_dir, "tb"))
    writer.scalars(0, {"index/collision_rate_before": report["collision_rate_before"],
                       "index/collision_rate_after": report["collision_rate_after"],
                       "index/nn_first_code_agreement": report["nn_first_code_agreement"],
                       **{f"index/mse_level_{i}": v for i, v in enumerate(report["quantisation_mse_per_level"])}})
    writer.close()
    return {k: report[k] for k in ("n_items", "collision_rate_before", "collision_rate_after", "sid_length_max",
                                   "nn_first_code_agreement", "random_first_code_agreement")}


def _write_trie(sids: SemanticIds, out_dir: str) -> bool:
    """Exports the prefix trie if the inference package provides `build_trie` (it owns trie.py)."""
    try:
        from gream_jax.index.trie import build_trie
    except ImportError as e:
        logging.warning("index: trie not written (gream_jax.index.trie unavailable: %s)", e)
        return False
    build_trie(sids).save(os.path.join(out_dir, "trie.npz"))
    return True
