"""How many of a chat writer's instruction drafts pass the proposer's checks, for each wording of the request.

    .venv/bin/python experiments/writer_yield.py [--tasks sst2 trec ...] [--lm local-instruct] [--drafts 8]
        [--asks current exemplar] [--cache-dir DIR] [--out experiments/results/writer_yield]

For each task, the LM proposer's chat request (task, fields, answer shares, five labeled training examples)
ends with each ask of ``ASKS`` in turn; the writer samples ``--drafts`` drafts per ask, on the same example
draws (one per draft slot, as ``LMProposer.propose`` draws them), and every draft goes through
``LMProposer.check``. Prints accepted / written per task and ask; writes every draft, its ask and the
check's verdict to --out/drafts.json and the table to --out/table.md. Calls go through the response cache.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from optimizer import proposers  # noqa: E402
from optimizer.data import make_splits  # noqa: E402
from optimizer.lm import create_backend, load_profile  # noqa: E402
from optimizer.lm.cache import ResponseCache  # noqa: E402
from optimizer.proposers import LMProposer, ProposalContext  # noqa: E402
from optimizer.task import load_task  # noqa: E402

ASKS = {
    "current": proposers._CHAT_ASK,
    # a worked example of the wanted form, from a task that is not among the shipped ones: a copied example
    # shares no word with the task and fails the topic check
    "exemplar": ("Write the instruction in one to three sentences, addressed to the model. For example, for a "
                 "task that sorts e-mails into spam and ham, a good instruction is: \"Read the e-mail. Answer "
                 "spam if it advertises a product or asks for money or passwords; otherwise answer ham.\" Now "
                 "write the instruction for this task. Reply with the instruction only."),
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=["sst2", "trec", "ag_news", "bbh_navigate", "bbh_sports"])
    ap.add_argument("--lm", default="local-instruct")
    ap.add_argument("--drafts", type=int, default=8)
    ap.add_argument("--asks", nargs="+", default=list(ASKS), choices=list(ASKS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "experiments/runs/writer_yield_cache")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments/results/writer_yield")
    args = ap.parse_args()
    backend = create_backend(load_profile(args.lm), cache=ResponseCache(args.cache_dir / "lm-cache.sqlite"))
    rows, drafts = [], []
    try:
        for name in args.tasks:
            task = load_task(ROOT / "tasks" / name / "task.yaml")
            train = make_splits(task).train
            for ask in args.asks:
                accepted = _one(name, task, train, backend, ask, args, drafts)
                rows.append({"task": name, "ask": ask, "accepted": accepted, "drafts": args.drafts})
                print(f"{name} {ask}: {accepted} of {args.drafts} accepted", flush=True)
    finally:
        backend.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "drafts.json").write_text(json.dumps(drafts, indent=2) + "\n")
    table = _table(rows, args.asks)
    (args.out / "table.md").write_text(table + "\n")
    print(table)
    return 0


def _one(name: str, task, train, backend, ask: str, args: argparse.Namespace, drafts: list[dict]) -> int:
    """Write ``args.drafts`` drafts under ``ask`` and check each; the number accepted."""
    proposers._CHAT_ASK = ASKS[ask]  # _chat_prompt ends with it and check() looks for echoes of it
    prop = LMProposer()
    ctx = ProposalContext(task=task, train=train, seed=args.seed, lm=backend, chat=True)
    rng = random.Random(f"{args.seed}:lm")  # the draws LMProposer.propose makes
    accepted = 0
    for slot in range(args.drafts):
        shots = rng.sample(train, min(prop.k, len(train)))
        text = prop._draft(ctx, prop._chat_prompt(task, train, shots), slot)
        check = prop.check(text, ctx, shots) if text else {"passed": False, "reason": "empty"}
        accepted += bool(check["passed"])
        drafts.append({"task": name, "ask": ask, "slot": slot, "text": text, **check})
    return accepted


def _table(rows: list[dict], asks: list[str]) -> str:
    lines = ["| task | " + " | ".join(f"{a}: accepted / written" for a in asks) + " |",
             "|---|" + "---|" * len(asks)]
    for name in dict.fromkeys(r["task"] for r in rows):
        cells = [next(f"{r['accepted']} / {r['drafts']}" for r in rows if r["task"] == name and r["ask"] == a)
                 for a in asks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    totals = [sum(r["accepted"] for r in rows if r["ask"] == a) for a in asks]
    written = [sum(r["drafts"] for r in rows if r["ask"] == a) for a in asks]
    lines.append("| all | " + " | ".join(f"{t} / {w}" for t, w in zip(totals, written)) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
