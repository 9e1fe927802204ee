"""What the rl stage's selection shipped, and what other rules would have: its validations replayed.

The rl stage writes each validation's per-user target ranks to WORKDIR/rl/trace.jsonl (the SFT
model at step 0, then every `config.rl.eval_every` steps); with `config.rl.trace_test=True` also
the test split's, for the same users. This prints, for each run, every validated step's figure and
its paired gain over the SFT model (valid, and test where traced), then for each selection rule
(`--min_z`: the paired z a step must reach, `rl_selection.improves`) the step it would export and
what that step gains over the SFT model. Several workdirs are pooled per user, as
`eval.paired` pools seeds: each user's gain is the mean over the runs, the s.e. is over users.

Why: RL is selected on one split's validations, ~15 of them on the same users, so the kept step's
validation gain over-states what it gains; the test trace shows by how much, and which margin
keeps the rl stage from exporting a step that is worse than the SFT model.

`--by_popularity=40,150` adds, at those steps, the gain split by how popular each user's target
is in the training split (equal thirds of the users; WORKDIR/data/split.npz): where RL's change
comes from (docs/results.md, session 22: credit moves to popular targets).

Command:
    python -m gream_jax.eval.rl_trace --workdirs=RUN_A,RUN_B --min_z=0,1,2 [--by_popularity=40,150]
"""

from __future__ import annotations

import math
import os

import numpy as np

from gream_jax.train.rl_selection import paired_gain, per_user_metric, replay_selection
from gream_jax.utils.io import read_jsonl


def load_trace(workdir: str) -> dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """split -> step -> (users [n], ranks [n]) from WORKDIR/rl/trace.jsonl, with clear errors."""
    path = os.path.join(workdir, "rl", "trace.jsonl")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file (the rl stage writes it at each validation)")

    def parse(row):
        return (int(row["step"]), str(row["split"]), np.asarray(row["users"], np.int64),
                np.asarray(row["ranks"], np.int64))

    out: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    for line_no, (step, which, users, ranks) in read_jsonl(path, parse, "a trace row"):
        if users.shape != ranks.shape or users.ndim != 1:
            raise ValueError(f"{path}:{line_no}: {users.size} users but {ranks.size} ranks")
        out.setdefault(which, {})[step] = (users, ranks)
    if 0 not in out.get("valid", {}):
        raise ValueError(f"{path}: no step-0 (SFT model) validation row")
    return out


def gains_over_sft(trace: dict, which: str, metric: str) -> dict[int, np.ndarray]:
    """step -> per-user metric gain over step 0 ([users], in step 0's user order) for one split."""
    rows = trace[which]
    users0, ranks0 = rows[0]
    base = per_user_metric(ranks0, metric)
    out = {}
    for step, (users, ranks) in sorted(rows.items()):
        if not np.array_equal(users, users0):
            raise ValueError(f"{which} step {step}: validated on other users than step 0")
        out[step] = per_user_metric(ranks, metric) - base
    return out


def _mean_se(d: np.ndarray) -> tuple[float, float]:
    return float(d.mean()), (float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0)


def run_table(trace: dict, metric: str) -> str:
    """One run's validated steps: figure and paired gain over the SFT model, valid (and test)."""
    valid = trace["valid"]
    test = trace.get("test", {})
    lines = [f"| step | valid {metric} | valid gain (s.e.) | z | test {metric} | test gain (s.e.) |",
             "|---|---|---|---|---|---|"]
    for step, (_, ranks) in sorted(valid.items()):
        gain, se, z = paired_gain(ranks, valid[0][1], metric)
        value = per_user_metric(ranks, metric).mean()
        if step in test and 0 in test:
            t_gain, t_se, _ = paired_gain(test[step][1], test[0][1], metric)
            t_cells = f"{per_user_metric(test[step][1], metric).mean():.4f} | {t_gain:+.4f} ({t_se:.4f})"
        else:
            t_cells = "- | -"
        lines.append(f"| {step} | {value:.4f} | {gain:+.4f} ({se:.4f}) | {z:+.2f} | {t_cells} |")
    return "\n".join(lines)


def pooled_table(traces: list[tuple[str, dict]], metric: str) -> str:
    """The gain over the SFT model at each step every run validated, pooled per user over the runs
    (valid, and test where every run traced it): the trajectory RL follows, not one pick of it."""
    valid = [gains_over_sft(t, "valid", metric) for _, t in traces]
    test = [gains_over_sft(t, "test", metric) for _, t in traces] if _all_traced_test(traces) else None
    same_users = _same_users(traces)
    steps = sorted(set.intersection(*(set(g) for g in valid)))
    lines = ["| step | valid gain (s.e.) | test gain (s.e.) |", "|---|---|---|"]
    for step in steps:
        v = _pool([g[step] for g in valid], same_users)
        cells = [str(step), f"{v[0]:+.4f} ({v[1]:.4f})"]
        if test is not None and all(step in g for g in test):
            t = _pool([g[step] for g in test], same_users)
            cells.append(f"{t[0]:+.4f} ({t[1]:.4f})")
        else:
            cells.append("-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selected_step(trace: dict, metric: str, min_gain: float, min_z: float) -> int:
    """The step `rl_selection.improves` keeps under this rule, from the run's validations in order."""
    valid = trace["valid"]
    steps = sorted(valid)
    values = [float(per_user_metric(valid[s][1], metric).mean()) for s in steps]
    zs = [paired_gain(valid[s][1], valid[0][1], metric)[2] for s in steps]
    return replay_selection(steps, values, zs, min_gain, min_z)


def rules_table(traces: list[tuple[str, dict]], metric: str, min_gain: float, min_zs) -> str:
    """For each rule: the step each run keeps and the kept steps' gains over the SFT model, pooled
    per user over the runs (valid, and test where every run traced it)."""
    lines = ["| rule | steps kept | valid gain (s.e.) | test gain (s.e.) | runs that keep RL and lose on test |",
             "|---|---|---|---|---|"]
    valid_gains = [gains_over_sft(t, "valid", metric) for _, t in traces]
    test_gains = [gains_over_sft(t, "test", metric) for _, t in traces] if _all_traced_test(traces) else None
    same_users = _same_users(traces)
    for min_z in min_zs:
        kept = [selected_step(t, metric, min_gain, min_z) for _, t in traces]
        v = _pool([g[s] for g, s in zip(valid_gains, kept)], same_users)
        cells = [f"min_gain {min_gain:g}, min_z {min_z:g}", ", ".join(map(str, kept)), f"{v[0]:+.4f} ({v[1]:.4f})"]
        if test_gains is not None and all(s in g for g, s in zip(test_gains, kept)):
            t = _pool([g[s] for g, s in zip(test_gains, kept)], same_users)
            losers = sum(1 for g, s in zip(test_gains, kept) if s != 0 and g[s].mean() < 0)
            cells += [f"{t[0]:+.4f} ({t[1]:.4f})", str(losers)]
        else:
            cells += ["- (not traced)", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_target_popularity(workdirs: list[str]) -> dict[str, np.ndarray]:
    """split -> [n_users] training-split rating count of each user's target, from the first
    workdir's data/split.npz; every other workdir must hold the same split (or none)."""
    from gream_jax.data.prepare import load_split

    first = os.path.join(workdirs[0], "data", "split.npz")
    if not os.path.isfile(first):
        raise ValueError(f"{first}: no such file (--by_popularity reads the prepared split)")
    split = load_split(first)
    for w in workdirs[1:]:
        path = os.path.join(w, "data", "split.npz")
        if os.path.isfile(path):
            other = load_split(path)
            if not (np.array_equal(other.valid_targets, split.valid_targets)
                    and np.array_equal(other.test_targets, split.test_targets)):
                raise ValueError(f"{w}/data/split.npz: other targets than {first}; pool runs of one dataset")
    targets = {which: split.targets(which) for which in ("valid", "test")}
    counts = split.item_counts(1 + max(int(t.max(initial=-1)) for t in targets.values()))
    return {which: counts[t] for which, t in targets.items()}


def popularity_thirds(popularity: np.ndarray) -> np.ndarray:
    """[users] target popularity -> [users] bin 0 / 1 / 2 (low / mid / high third of the users by
    rank; ties broken by user order, so the thirds are equal in size)."""
    order = np.argsort(popularity, kind="stable")
    bins = np.empty(len(popularity), np.int64)
    bins[order] = np.arange(len(popularity)) * 3 // max(len(popularity), 1)
    return bins


def popularity_table(traces: list[tuple[str, dict]], popularity: dict[str, np.ndarray], step: int,
                     metric: str) -> str:
    """The gain over the SFT model at `step` in each third of the users by target popularity,
    pooled per user over the runs (valid, and test where every run traced it)."""
    if not _same_users(traces):
        raise ValueError("--by_popularity pools per user: every run must validate the same users")
    splits = ["valid"] + (["test"] if _all_traced_test(traces) else [])
    lines = [f"| split, step {step} | target popularity | users | mean training ratings | SFT {metric} | "
             "gain (s.e.) |", "|---|---|---|---|---|---|"]
    for which in splits:
        gains = [gains_over_sft(t, which, metric) for _, t in traces]
        if not all(step in g for g in gains):
            raise ValueError(f"step {step}: not validated on {which} by every run")
        users = traces[0][1][which][0][0]                      # step 0's [users], every run's order
        if users.max(initial=-1) >= len(popularity[which]):
            raise ValueError(f"{which}: trace user {int(users.max())} beyond the split's "
                             f"{len(popularity[which])} users")
        pop = popularity[which][users]
        base = np.mean([per_user_metric(t[which][0][1], metric) for _, t in traces], axis=0)
        gain = np.mean([g[step] for g in gains], axis=0)
        bins = popularity_thirds(pop)
        for b, name in enumerate(("low third", "mid third", "high third")):
            m = bins == b
            mean, se = _mean_se(gain[m])
            lines.append(f"| {which} | {name} | {int(m.sum())} | {pop[m].mean():.1f} | {base[m].mean():.4f} | "
                         f"{mean:+.4f} ({se:.4f}) |")
    return "\n".join(lines)


def _all_traced_test(traces: list[tuple[str, dict]]) -> bool:
    """Whether every run traced the test split, step 0 included (`config.rl.trace_test`)."""
    return all("test" in t and 0 in t["test"] for _, t in traces)


def _same_users(traces: list[tuple[str, dict]]) -> bool:
    """Whether every run validated the same users, so gains can be pooled per user."""
    first = traces[0][1]["valid"][0][0]
    return all(np.array_equal(t["valid"][0][0], first) for _, t in traces)


def _pool(per_run: list[np.ndarray], same_users: bool) -> tuple[float, float]:
    """Mean gain and s.e.: per user over runs on the same users, else over every (run, user) row."""
    if same_users:
        return _mean_se(np.mean(per_run, axis=0))
    return _mean_se(np.concatenate(per_run))


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdirs", required=True, help="comma-separated workdirs whose rl stage ran")
    p.add_argument("--metric", default="ndcg@10", help="recall@K or ndcg@K")
    p.add_argument("--min_gain", type=float, default=0.0)
    p.add_argument("--min_z", default="0,1,2", help="comma-separated paired-z thresholds to replay")
    p.add_argument("--by_popularity", default="", help="comma-separated steps: gains by target popularity")
    args = p.parse_args(argv)
    try:
        min_zs = [float(z) for z in args.min_z.split(",")]
        traces = [(w, load_trace(w)) for w in args.workdirs.split(",")]
        for workdir, trace in traces:
            print(f"## {workdir}\n{run_table(trace, args.metric)}\n")
        if len(traces) > 1:
            print(f"## every run's gain over its SFT model, pooled per user ({len(traces)} runs)")
            print(pooled_table(traces, args.metric) + "\n")
        print(f"## what each rule keeps ({len(traces)} run(s), gains over the SFT model)")
        print(rules_table(traces, args.metric, args.min_gain, min_zs))
        if args.by_popularity:
            popularity = load_target_popularity([w for w, _ in traces])
            for step in (int(x) for x in args.by_popularity.split(",")):
                print(f"\n## gain over the SFT model by target popularity, step {step} ({len(traces)} run(s))")
                print(popularity_table(traces, popularity, step, args.metric))
    except ValueError as e:
        raise SystemExit(f"gream_jax.eval.rl_trace: {e}") from None


if __name__ == "__main__":
    from gream_jax.utils.cli import run_cli
    run_cli(main)
