"""The comparison's tables, from result rows alone (no LM, no DSPy): the per-method table over seeds,
the verdict table, and when a run reached MIPROv2 light's validation score. ``experiments/compare.py``
runs the methods that write the rows; ``experiments/make_tables.py`` turns the rows into the tables."""

from __future__ import annotations

import statistics

from optimizer.stats import bootstrap_ci

METHODS = ("majority", "seed", "random", "bfrs", "mipro_light", "mipro_medium", "gepa", "ours")


def calls_to_reach(traj, target):
    """LM calls after which the best validation mean first reached ``target`` (None: never). Rows store
    validation scores to 4 decimals and trajectories to 6, so both are compared at 4: 37/60 is 0.6167 in
    one and 0.616667 in the other, and the same score reaches itself."""
    return next((c for c, v in traj if v is not None and round(v, 4) >= round(target, 4)), None)


def aggregate(rows):
    out = []
    keys = sorted({(r["task"], r["method"]) for r in rows},
                  key=lambda k: (k[0], METHODS.index(k[1].split("@")[0]), k[1]))
    for task, method in keys:
        rs = [r for r in rows if r["task"] == task and r["method"] == method]
        means = [r["test"] for r in rs]
        m = statistics.mean(means)
        if len(means) > 1:
            ci = bootstrap_ci(means, seed=0)
            lo, hi = ci.low, ci.high
        else:
            lo, hi = rs[0]["test_ci"]
        reach = None
        if method.startswith("ours"):
            ratios = []
            for r in rs:
                mip = next((x for x in rows if x["task"] == task and x["seed"] == r["seed"]
                            and x["method"] == "mipro_light" and x.get("val") is not None), None)
                if mip and r.get("trajectory"):
                    c = calls_to_reach(r["trajectory"], mip["val"])
                    ratios.append(None if c is None else c / max(1, mip["task_lm_calls"]))
            if ratios:
                reach = ratios
        out.append({"task": task, "method": method, "seeds": len(rs), "test_mean": round(m, 4),
                    "val_mean": (round(statistics.mean(r["val"] for r in rs), 4)
                                 if all(r.get("val") is not None for r in rs) else None),
                    "calls_to_mipro_light_val": reach,
                    "test_ci": [round(lo, 4), round(hi, 4)],
                    # the per-example 95% intervals of the seeds' test scores, averaged (the seed prompt is
                    # the same program for every seed, so its interval over seeds has no width)
                    "test_ci_examples": [round(statistics.mean(r["test_ci"][0] for r in rs), 4),
                                         round(statistics.mean(r["test_ci"][1] for r in rs), 4)],
                    "task_lm_calls": round(statistics.mean(r["task_lm_calls"] for r in rs)),
                    "proposer_calls": round(statistics.mean(r["proposer_calls"] for r in rs)),
                    "prompt_words": round(statistics.mean(r["prompt_words"] for r in rs)),
                    "seconds": round(statistics.mean(r["seconds"] for r in rs), 1)})
    return out


def markdown(table):
    lines = ["| task | method | seeds | test mean | 95% CI | val mean | task-LM calls | proposer calls | "
             "prompt words | wall s | calls to MIPROv2 light's val (fraction of its calls, per seed) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        reach = r.get("calls_to_mipro_light_val")
        reach_s = ", ".join("never" if x is None else f"{x:.2f}" for x in reach) if reach else ""
        val = f"{r['val_mean']:.3f}" if r.get("val_mean") is not None else ""
        lines.append(f"| {r['task']} | {r['method']} | {r['seeds']} | {r['test_mean']:.3f} | "
                     f"[{r['test_ci'][0]:.3f}, {r['test_ci'][1]:.3f}] | {val} | {r['task_lm_calls']} | "
                     f"{r['proposer_calls']} | {r['prompt_words']} | {r['seconds']} | {reach_s} |")
    return "\n".join(lines)


def verdict(table, ours="ours@small-model", ref="mipro_light"):
    """Per task: the seed prompt, MIPROv2 light and ours side by side, whether any method's mean lies above
    the seed prompt's 95% interval (the tasks the claim is about), and the mean over tasks of every
    method against ours on the tasks both ran."""
    by = {(r["task"], r["method"]): r for r in table}
    tasks = sorted({r["task"] for r in table})
    lines = [f"| task | seeds | label prior (no LM) | seed prompt [95% CI] | {ref} | {ours} | {ours} - {ref} | "
             "some method above the seed prompt's interval |", "|---|---|---|---|---|---|---|---|"]
    for t in tasks:
        seed, a, b = by.get((t, "seed")), by.get((t, ref)), by.get((t, ours))
        if not (seed and a and b):
            continue
        lo, hi = seed["test_ci_examples"]
        above = [r["method"] for r in table
                 if r["task"] == t and r["method"] not in ("seed", "majority") and r["test_mean"] > hi]
        prior = by.get((t, "majority"))
        prior_s = f"{prior['test_mean']:.3f}" if prior else "—"
        lines.append(f"| {t} | {b['seeds']} | {prior_s} | {seed['test_mean']:.3f} [{lo:.3f}, {hi:.3f}]"
                     f" | {a['test_mean']:.3f} | {b['test_mean']:.3f} | {b['test_mean'] - a['test_mean']:+.3f} | "
                     f"{'yes' if above else 'no'} |")
    lines += ["", f"Mean test score over the tasks both ran (seed means averaged per task first):", "",
              f"| method | tasks | method mean | {ours} mean on those tasks |", "|---|---|---|---|"]
    for m in sorted({r["method"] for r in table} - {ours}, key=lambda m: (METHODS.index(m.split("@")[0]), m)):
        both = [t for t in tasks if (t, m) in by and (t, ours) in by]
        if both:
            lines.append(f"| {m} | {len(both)} | {statistics.mean(by[(t, m)]['test_mean'] for t in both):.3f} | "
                         f"{statistics.mean(by[(t, ours)]['test_mean'] for t in both):.3f} |")
    return "\n".join(lines)
