"""What a writer LM proposes for the shipped tasks, with the check each draft passed or why it failed.

For each task, the ``lm`` proposer runs with the writer profile (default ``local-instruct``, the embedded
instruct model; ``local`` is the base model writing for itself) on the task's training split, as a run with
``optimizer.proposer_lm: WRITER`` does, and every draft goes to ``experiments/results/proposals/WRITER.json``
(accepted with its check, rejected with the reason) and a readable ``WRITER.md``. Responses are cached under
``experiments/results/proposals/cache`` (ignored by git), so a rerun is free.

    .venv/bin/python experiments/proposals.py [--writer local-instruct] [--n 5] [TASK ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import ROOT, git_commit  # noqa: E402

from optimizer.data import make_splits  # noqa: E402
from optimizer.lm import ResponseCache, create_backend  # noqa: E402
from optimizer.proposers import LMProposer, ProposalContext  # noqa: E402
from optimizer.run.inputs import resolve_lm  # noqa: E402
from optimizer.task import load_task  # noqa: E402

OUT = ROOT / "experiments" / "results" / "proposals"
TASKS = ("sst2", "trec", "ag_news", "bbh_navigate", "bbh_sports")


def propose(task_name: str, writer: str, n: int, seed: int) -> dict:
    t0 = time.perf_counter()
    task = load_task(ROOT / "tasks" / task_name / "task.yaml")
    profile = resolve_lm(task, writer)
    backend = create_backend(profile, cache=ResponseCache(OUT / "cache" / "lm-cache.sqlite"))
    ctx = ProposalContext(task, make_splits(task).train, seed, backend, chat=profile.resolved_adapter == "chat")
    found = LMProposer().propose(ctx, n)
    return {"task": task_name, "writer": writer, "seed": seed, "asked": n, "drafts": ctx.notes.get("lm_drafts"),
            "accepted": ctx.notes.get("accepted", []), "rejected": ctx.notes.get("rejected", []),
            "pool": [p.text for p in found], "calls": backend.usage.calls, "cache_hits": backend.usage.cache_hits,
            "seconds": round(time.perf_counter() - t0, 1)}


def markdown(rows: list[dict], commit: str | None) -> str:
    lines = [f"# Instructions written by `{rows[0]['writer']}`", "",
             f"The `lm` proposer on each task's training split, seed {rows[0]['seed']}, {rows[0]['asked']} asked for "
             f"(commit {commit}). Made by `experiments/proposals.py`; every draft is listed.", ""]
    for r in rows:
        lines += [f"## {r['task']}: {len(r['accepted'])} accepted of {r['drafts']} drafts", ""]
        for a in r["accepted"]:
            lines.append(f"- accepted: {a['text']}  (task words: {', '.join(a.get('task_words', []))})")
        for a in r["rejected"]:
            lines.append(f"- rejected ({a['reason']}): {a['text']}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tasks", nargs="*", default=list(TASKS))
    ap.add_argument("--writer", default="local-instruct")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for t in args.tasks:
        rows.append(propose(t, args.writer, args.n, args.seed))
        print(f"{t}: {len(rows[-1]['accepted'])} accepted of {rows[-1]['drafts']} drafts", flush=True)
    commit = git_commit()
    (OUT / f"{args.writer}.json").write_text(json.dumps({"commit": commit, "rows": rows}, indent=1) + "\n")
    (OUT / f"{args.writer}.md").write_text(markdown(rows, commit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
