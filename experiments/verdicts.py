"""The default command's verdicts on the shipped tasks: is the winner better than every trivial baseline?

For each task, ``optimize tasks/TASK/task.yaml`` with nothing else (the task's own settings, seed 0, the
embedded model), then one table row from its ``summary.json``: the label prior, the seed prompt, the
random k-shot prompt and the winner on test, the verdict (paired, Holm-corrected), whether the winner is
degenerate, and the promotion rule that chose it. Rows are appended to ``verdicts.jsonl`` with provenance
(commit, task version, UTC time); ``verdicts.md`` is made from the newest row of each task.

    .venv/bin/python experiments/verdicts.py [TASK ...]        # run (resumable) and make the table
    .venv/bin/python experiments/verdicts.py --preset NAME [TASK ...]   # the same command with --preset NAME
                                             # (a user preset, or an experiment preset of experiments/presets)
    .venv/bin/python experiments/verdicts.py --table           # only make the table from the rows
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import ROOT, append_row, git_commit, load_rows, preset_path, provenance  # noqa: E402

OUT = ROOT / "experiments" / "results" / "verdicts"
TASKS = ("sst2", "trec", "ag_news", "bbh_navigate", "bbh_sports", "gsm8k")


def run_task(task: str, preset: str | None = None) -> dict:
    run = OUT / "runs" / (f"{task}-seed0" + (f"-{preset}" if preset else ""))
    cmd = [sys.executable, "-m", "optimizer.cli", str(ROOT / "tasks" / task / "task.yaml"), "--out", str(run),
           "--cache-dir", str(OUT / "cache"), "--quiet"] + (["--preset", str(preset_path(preset))] if preset else [])
    subprocess.run(cmd, cwd=ROOT, check=True)
    s = json.loads((run / "summary.json").read_text())
    b = s["baselines"]
    return {"task": task, "method": f"ours@{preset}" if preset else "ours", "seed": s["seed"], "test_n": s["splits"]["test"], "lm_calls": s["lm_calls"],
            "wall_seconds": s["wall_seconds"],
            "label_prior": b["label_prior"], "seed_prompt": b["seed"], "random_kshot": b["random_kshot"],
            "winner": {k: s["best"].get(k) for k in ("val", "test", "test_ci", "n_demos", "scoring", "degenerate",
                                                     "answer_distribution", "optimism", "parse_failure_rate")},
            "confirmation": s.get("confirmation"),
            "verdict": {k: s["verdict"][k] for k in ("status", "against", "p", "words")},
            "promotion": s.get("promotion")}


def _t(entry: dict | None) -> str:
    return "—" if not entry else f"{entry['test']:.3f}"


def _section(method: str, newest: dict[str, dict]) -> list[str]:
    command = "`optimize tasks/TASK/task.yaml`" + (f" `--preset {method.split('@', 1)[1]}`" if "@" in method else "")
    lines = [f"## {command}", "", "| task | test n | LM calls | label prior | seed prompt | random k-shot | "
             "winner [95% CI] | verdict | against, Holm p | degenerate | no answer | promotion |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for task in [t for t in TASKS if t in newest]:
        r = newest[task]
        w, v = r["winner"], r["verdict"]
        lines.append(f"| {task} | {r['test_n']} | {r['lm_calls']} | {_t(r['label_prior'])} | {_t(r['seed_prompt'])} | "
                     f"{_t(r['random_kshot'])} | {w['test']:.3f} [{w['test_ci'][0]:.3f}, {w['test_ci'][1]:.3f}] | "
                     f"**{v['status']}** | {v['against']}, {v['p']:.3g} | {'yes' if w['degenerate'] else 'no'} | "
                     f"{(w.get('answer_distribution') or {}).get('', 0) / r['test_n']:.3f} | "
                     f"{(r['promotion'] or {}).get('rule', '—')} |")
    lines += [""] + [f"- {t}: {newest[t]['verdict']['words']}" for t in TASKS if t in newest]
    return lines + [""]


def table(rows: list[dict]) -> str:
    by_method: dict[str, dict[str, dict]] = {}
    for r in rows:  # the newest row of each (method, task) wins
        by_method.setdefault(r.get("method", "ours"), {})[r["task"]] = r
    body: list[str] = []
    for method in sorted(by_method, key=lambda m: (m != "ours", m)):
        body += _section(method, by_method[method])
    commits = sorted({str(r["provenance"]["commit"]) for m in by_method.values() for r in m.values()})
    return ("# Verdicts on the shipped tasks\n\n"
            "Seed 0, the embedded Gemma 3 270M, each task's own settings; every baseline is scored on the same "
            "test examples as the winner; `improved` only when the winner beats each of them, paired (exact "
            "McNemar), Holm-corrected, p < 0.05. No answer: the share of the winner's test answers that name no "
            "label (scored wrong). Made by `experiments/verdicts.py` from `verdicts.jsonl` "
            f"(commit {', '.join(commits)}); do not edit by hand.\n\n" + "\n".join(body))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tasks", nargs="*", default=list(TASKS))
    ap.add_argument("--table", action="store_true", help="only make verdicts.md from the rows")
    ap.add_argument("--preset", help="run the command with --preset NAME (rows of method ours@NAME)")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    rows_file = OUT / "verdicts.jsonl"
    if not args.table:
        commit = git_commit()  # the code the runs start from (each run imports it when it starts)
        for task in args.tasks:
            row = run_task(task, args.preset)
            append_row(rows_file, row, provenance("verdicts", task, row["method"], commit))
            print(f"{task}: {row['verdict']['status']} ({row['verdict']['words']})", flush=True)
    (OUT / "verdicts.md").write_text(table(load_rows(rows_file)))
    print(f"wrote {OUT / 'verdicts.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
