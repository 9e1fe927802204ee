"""Quality report of a semantic-ID index: collisions, codebook use, and a semantic check.

Why each number: collision rates say how much the last level had to invent; utilisation and
entropy catch collapsed codebooks (a level whose codes are mostly unused carries little
information); max/min cluster size shows whether balancing held; and the nearest-neighbour
check says whether the first code means something: the share of items whose embedding nearest
neighbour shares their first code, next to what random codes with the same cluster sizes give.
"""

from __future__ import annotations

import os

import numpy as np


def level_stats(codes: np.ndarray, level_sizes: tuple[int, ...], lengths: np.ndarray) -> list[dict]:
    """Per level: used codes, utilisation, entropy (bits and normalised), cluster sizes."""
    out = []
    for level, size in enumerate(level_sizes):
        present = lengths > level
        counts = np.bincount(codes[present, level], minlength=size)
        used = counts[counts > 0]
        p = used / max(used.sum(), 1)
        entropy = float(-(p * np.log2(p)).sum()) if len(p) else 0.0
        out.append({"level": level, "codes": int(size), "items": int(present.sum()),
                    "used_codes": int(len(used)), "utilisation": len(used) / size,
                    "entropy_bits": entropy,
                    "entropy_normalised": entropy / np.log2(size) if size > 1 else 1.0,
                    "max_cluster": int(used.max()) if len(used) else 0,
                    "min_cluster": int(used.min()) if len(used) else 0,
                    "min_cluster_incl_unused": int(counts.min())})
    return out


def nearest_neighbours(x: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Index of each row's nearest other row (Euclidean), on device in chunks; `[n]`."""
    import jax
    import jax.numpy as jnp

    xj = jnp.asarray(x, jnp.float32)
    sq = jnp.sum(xj * xj, axis=1)

    @jax.jit
    def block(rows, start):
        d = sq[None, :] - 2.0 * rows @ xj.T
        self_idx = start + jnp.arange(rows.shape[0])
        d = d.at[jnp.arange(rows.shape[0]), self_idx].set(jnp.inf)
        return jnp.argmin(d, axis=1)

    n = x.shape[0]
    out = np.zeros(n, np.int64)
    for s in range(0, n, chunk):
        rows = np.zeros((chunk, x.shape[1]), np.float32)
        e = min(n, s + chunk)
        rows[:e - s] = x[s:e]
        out[s:e] = np.asarray(block(jnp.asarray(rows), s))[:e - s]
    return out


def first_code_agreement(embeddings: np.ndarray, first_codes: np.ndarray) -> dict:
    """Share of items whose nearest neighbour shares the first code, and the random baseline
    (probability that a random other item shares it, given the same cluster sizes)."""
    n = len(first_codes)
    if n < 2:
        return {"nn_first_code_agreement": 0.0, "random_first_code_agreement": 0.0}
    nn = nearest_neighbours(embeddings)
    agree = float(np.mean(first_codes[nn] == first_codes))
    counts = np.bincount(first_codes).astype(np.float64)
    random = float(np.sum(counts * (counts - 1)) / (n * (n - 1)))
    return {"nn_first_code_agreement": agree, "random_first_code_agreement": random}


def build_report(*, n_items: int, quant_codes: np.ndarray, sid_codes: np.ndarray, lengths: np.ndarray,
                 level_sizes: tuple[int, ...], before: dict, after: dict, level_mse, embeddings: np.ndarray,
                 extra: dict) -> dict:
    report = {"n_items": int(n_items),
              "collision_rate_before": before["collision_rate"],
              "collision_groups_before": before["collision_groups"],
              "largest_collision_group_before": before["largest_group"],
              "collision_rate_after": after["collision_rate"],
              "sid_length_max": int(lengths.max()) if len(lengths) else 0,
              "sid_length_mean": float(lengths.mean()) if len(lengths) else 0.0,
              "level_sizes": list(level_sizes),
              "quantisation_mse_per_level": [float(v) for v in level_mse],
              "levels": level_stats(sid_codes, level_sizes, lengths)}
    report.update(first_code_agreement(embeddings, quant_codes[:, 0]))
    report.update(extra)
    return report


def format_report(report: dict) -> str:
    lines = [f"index report: {report['n_items']} items, SID length max {report['sid_length_max']} "
             f"(mean {report['sid_length_mean']:.2f}), level sizes {report['level_sizes']}",
             f"  collisions before resolution: {100 * report['collision_rate_before']:.1f}% of items "
             f"({report['collision_groups_before']} groups, largest {report['largest_collision_group_before']}); "
             f"after: {100 * report['collision_rate_after']:.1f}%",
             f"  nearest-neighbour first-code agreement {report['nn_first_code_agreement']:.3f} "
             f"(random codes {report['random_first_code_agreement']:.3f})",
             "  quantisation MSE per level: " + ", ".join(f"{v:.4f}" for v in report["quantisation_mse_per_level"])]
    for s in report["levels"]:
        lines.append(f"  level {s['level']}: {s['used_codes']}/{s['codes']} codes used "
                     f"({100 * s['utilisation']:.1f}%), entropy {s['entropy_normalised']:.3f} of max, "
                     f"cluster size {s['min_cluster']}..{s['max_cluster']}")
    return "\n".join(lines)


def plot_utilisation(sid_codes: np.ndarray, lengths: np.ndarray, level_sizes, path: str) -> None:
    """Sorted code-usage counts per level, one panel per level (PNG, Agg backend)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = len(level_sizes)
    fig, axes = plt.subplots(1, levels, figsize=(4 * levels, 3), squeeze=False)
    for level, size in enumerate(level_sizes):
        present = lengths > level
        counts = np.sort(np.bincount(sid_codes[present, level], minlength=size))[::-1]
        ax = axes[0, level]
        ax.bar(np.arange(size), counts, width=1.0)
        ax.set_title(f"level {level} ({int((counts > 0).sum())}/{size} used)")
        ax.set_xlabel("code (sorted by use)")
        ax.set_ylabel("items")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
