"""Run `optimize` on every example task and print one Markdown table (seed prompt vs winner on test).

    .venv/bin/python experiments/example_tasks.py [--tasks sst2 trec ...] [--seed 0] [--fresh-cache]
        [--lm local-instruct] [--preset NAME] [--trials N] [--validation N] [--test N]
        [--out experiments/results/example_tasks]

Each task runs as its own `optimize` process (the real CLI, default settings of its task.yaml),
timed, with its peak resident memory read by /usr/bin/time. Each task's row goes to --out/rows.json as
it finishes (replacing that task's earlier row), and the table (--out/table.md) is made from all rows;
`--from-runs` makes rows from run directories already there. `--preset NAME` runs every task with that
preset (configs/optimizer or experiments/presets, as `optimize --preset`). Run directories go under --out/runs (not
committed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from rows import preset_path  # noqa: E402

TASKS = ["sst2", "trec", "ag_news", "bbh_navigate", "bbh_sports", "gsm8k"]  # also the table's order


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments/results/example_tasks")
    ap.add_argument("--trials", type=int, help="override every task's optimizer.trials")
    ap.add_argument("--lm", help="override every task's LM profile (for example local-instruct)")
    ap.add_argument("--preset", help="run every task with this optimizer preset (configs/optimizer/NAME.yaml or "
                    "experiments/presets/NAME.yaml)")
    ap.add_argument("--validation", type=int, help="cap every task's validation split (a task file that includes "
                    "the shipped one, written to --out/tasks)")
    ap.add_argument("--test", type=int, help="cap every task's test split (the same way)")
    ap.add_argument("--fresh-cache", action="store_true", help="start from an empty LM cache (honest timings)")
    ap.add_argument("--from-runs", action="store_true", help="run nothing: make the rows of --tasks from their run "
                    "directories under --out/runs (wall time from the run's summary, no peak memory)")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    if args.fresh_cache and cache.exists():
        shutil.rmtree(cache)
    for name in args.tasks:
        run_dir = out / "runs" / f"{name}-seed{args.seed}"
        if args.from_runs:
            s = json.loads((run_dir / "summary.json").read_text())
            wall = s.get("wall_seconds")
            save_row(out, _row(name, s, args, None if wall is None else round(wall, 1), None))
            continue
        if run_dir.exists():
            shutil.rmtree(run_dir)
        task_file = ROOT / "tasks" / name / "task.yaml"
        if args.validation or args.test:
            task_file = capped_task(task_file, out / "tasks" / f"{name}.yaml", args.validation, args.test)
        cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "optimizer.cli", str(task_file),
               "--seed", str(args.seed), "--out", str(run_dir), "--cache-dir", str(cache), "--quiet"]
        if args.trials:
            cmd += ["--trials", str(args.trials)]
        if args.lm:
            cmd += ["--lm", args.lm]
        if args.preset:
            cmd += ["--preset", str(preset_path(args.preset))]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(f"{name}: failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        peak_kb = int(proc.stderr.strip().splitlines()[-1])
        s = json.loads((run_dir / "summary.json").read_text())
        save_row(out, _row(name, s, args, round(wall, 1), round(peak_kb / 1024)))
        print(f"{name}: seed {s['baseline']['test']:.3f} -> winner {s['best']['test']:.3f} "
              f"({s['lm_calls']} calls, {wall:.0f} s)", flush=True)
    rows = json.loads((out / "rows.json").read_text()) if (out / "rows.json").exists() else []
    table = make_table(rows)
    (out / "table.md").write_text(table + "\n")
    print(table)
    return 0


def _row(name: str, s: dict, args: argparse.Namespace, wall: float | None, peak_mb: int | None) -> dict:
    """A task's row from its run's summary.json."""
    random_kshot = (s.get("baselines") or {}).get("random_kshot") or {}
    return {"task": name, "seed": args.seed, "baseline_test": s["baseline"]["test"],
            "baseline_ci": s["baseline"]["test_ci"], "best_test": s["best"]["test"],
            "best_ci": s["best"]["test_ci"], "best_val": s["best"]["val"], "n_demos": s["best"]["n_demos"],
            "instruction_origin": s["best"]["instruction_origin"], "significant": s["significant"],
            "lm_calls": s["lm_calls"], "paid_calls": s["paid_calls"], "test_n": s["splits"]["test"],
            "lm": args.lm or "task", "preset": args.preset, "vs_seed": _vs_seed(s),
            "parse_failure_rate": s["best"].get("parse_failure_rate"),
            "random_kshot_test": random_kshot.get("test"),
            "verdict": {k: (s.get("verdict") or {}).get(k) for k in ("status", "against", "p")},
            "trials": s["trials"], "wall_seconds": wall, "peak_rss_mb": peak_mb}


def _vs_seed(s: dict) -> dict | None:
    """The winner against the seed prompt on test: the difference and its paired p (uncorrected, and Holm
    over the run's baselines), from the run's verdict."""
    t = ((s.get("verdict") or {}).get("tests") or {}).get("seed")
    return None if t is None else {k: t.get(k) for k in ("diff", "p", "p_holm")}


def save_row(out: Path, row: dict) -> None:
    """Write ``row`` into OUT/rows.json, replacing the earlier row of its task and seed (rows of other tasks and
    seeds stay)."""
    path = out / "rows.json"
    key = (row["task"], row["seed"])
    rows = [r for r in (json.loads(path.read_text()) if path.exists() else []) if (r["task"], r["seed"]) != key]
    order = {t: i for i, t in enumerate(TASKS)}
    rows = sorted(rows + [row], key=lambda r: (order.get(r["task"], len(order)), r["seed"]))
    path.write_text(json.dumps(rows, indent=2) + "\n")


def make_table(rows: list[dict]) -> str:
    lines = ["| task | seed | test n | seed prompt (test, 95% CI) | random k-shot | winner (test, 95% CI) |"
             " winner val | demos | instruction | verdict | vs seed prompt (paired p) | winner's parse failures |"
             " LM calls | wall s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        v = r.get("verdict") or {}
        verdict = f"{v['status']} (vs {v['against']}, p = {v['p']:.3g})" if v.get("status") else (
            "CIs disjoint" if r["significant"] else "CIs overlap")
        rk = r.get("random_kshot_test")
        lines.append(f"| {r['task']} | {r['seed']} | {r['test_n']} | {r['baseline_test']:.3f} "
                     f"[{r['baseline_ci'][0]:.3f}, {r['baseline_ci'][1]:.3f}] | {'—' if rk is None else f'{rk:.3f}'} | "
                     f"{r['best_test']:.3f} [{r['best_ci'][0]:.3f}, {r['best_ci'][1]:.3f}] | {r['best_val']:.3f} | "
                     f"{r['n_demos']} | "
                     f"{r['instruction_origin']} | {verdict} | {_vs(r.get('vs_seed'))} | "
                     f"{_rate(r.get('parse_failure_rate'))} | {r['lm_calls']} | "
                     f"{'—' if r['wall_seconds'] is None else r['wall_seconds']} | "
                     f"{'—' if r['peak_rss_mb'] is None else r['peak_rss_mb']} |")
    if len({r["seed"] for r in rows}) > 1:
        lines += ["", *seed_means(rows)]
    return "\n".join(lines)


def seed_means(rows: list[dict]) -> list[str]:
    """Per task, over its seeds: the mean test score of the seed prompt and of the winner, and in how many
    seeds the winner beat the seed prompt on test with paired p < 0.05."""
    lines = ["| task | seeds | seed prompt (mean test) | winner (mean test) | winner above the seed prompt, p < 0.05 |",
             "|---|---|---|---|---|"]
    for task in dict.fromkeys(r["task"] for r in rows):
        rs = [r for r in rows if r["task"] == task]
        wins = sum(1 for r in rs if (t := r.get("vs_seed")) and t["diff"] > 0 and t["p"] < 0.05)
        lines.append(f"| {task} | {', '.join(str(r['seed']) for r in rs)} | "
                     f"{sum(r['baseline_test'] for r in rs) / len(rs):.3f} | "
                     f"{sum(r['best_test'] for r in rs) / len(rs):.3f} | {wins} of {len(rs)} |")
    return lines


def capped_task(shipped: Path, path: Path, validation: int | None, test: int | None) -> Path:
    """A task file that includes ``shipped`` with its validation and test splits capped."""
    splits = {k: {"limit": v} for k, v in (("validation", validation), ("test", test)) if v}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"include": str(shipped), "splits": splits}))
    return path


def _vs(t: dict | None) -> str:
    return "—" if not t else f"{t['diff']:+.3f} (p = {t['p']:.3g})"


def _rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


if __name__ == "__main__":
    sys.exit(main())
