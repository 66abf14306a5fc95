"""Make the comparison's tables from its rows (no LM; run after ``experiments/run.py`` or on its own).

    .venv/bin/python experiments/make_tables.py [--rows experiments/results/compare/rows.jsonl]

Writes, from the newest row of each (task, seed, method) at the task's current version
(``rows.latest``):

- ``table.md`` and ``table.json`` beside the rows: every method per task over seeds, then the verdict;
- ``table-old-versions.md`` there: the rows of earlier task versions, which the tables above leave out;
- for the repository's own rows, the headline table between ``<!-- results:begin -->`` and
  ``<!-- results:end -->`` in README.md and in experiments/results/README.md (the results page, which
  also gets the verdict). The text around the markers is left as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import rows as rowsfile  # noqa: E402
from run import load_defaults, sizes_of  # noqa: E402

RESULTS = ROOT / "experiments" / "results" / "compare"
PAGES = (ROOT / "README.md", ROOT / "experiments" / "results" / "README.md")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
#: the headline table's columns: (method, header)
HEADLINE = (("random", "random 4-shot"), ("bfrs", "BFRS"), ("mipro_light", "MIPROv2 light"),
            ("ours@small-model", "ours `small-model`"),
            ("ours@small-model-crossfit-both", "ours `small-model-crossfit-both`"))


def split_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the newest row per key at each task's current version, the newest rows of earlier versions with
    the version in the task's name)."""
    versions = rowsfile.current_versions(rows)
    current = rowsfile.latest(rows, versions)
    old = [r for r in rows if versions.get(r["task"]) is not None and rowsfile.version_of(r) != versions[r["task"]]]
    labelled = [{**r, "task": f"{r['task']} v{rowsfile.version_of(r)}"} for r in old]
    return current, rowsfile.latest(labelled)


def headline(table: list[dict], sizes) -> str:
    """Per task: the seed prompt with its per-example interval and the headline methods' test means over
    seeds; the best of those (strictly) in bold."""
    by = {(r["task"], r["method"]): r for r in table}
    head = "| task | test n | seed prompt [95% CI] | " + " | ".join(h for _, h in HEADLINE) + " |"
    lines = [head, "|---" * (3 + len(HEADLINE)) + "|"]
    for task in sorted({r["task"] for r in table}, key=_task_order):
        seed = by.get((task, "seed"))
        if seed is None:
            continue
        lo, hi = seed["test_ci_examples"]
        means = [by[(task, m)]["test_mean"] if (task, m) in by else None for m, _ in HEADLINE]
        top = max((v for v in means if v is not None), default=None)
        strict = top is not None and sum(round(v, 3) == round(top, 3) for v in means if v is not None) == 1
        cells = ["—" if v is None else (f"**{v:.3f}**" if strict and v == top else f"{v:.3f}") for v in means]
        lines.append(f"| {task} | {sizes(task)['test']} | {seed['test_mean']:.3f} [{lo:.3f}, {hi:.3f}] | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _task_order(task: str):
    order = ("sst2", "trec", "ag_news", "bbh_navigate", "bbh_sports", "gsm8k")
    return (order.index(task) if task in order else len(order), task)


def replace_block(text: str, block: str, where: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{where}: no {BEGIN} ... {END} block to fill")
    before, rest = text.split(BEGIN, 1)
    return before + BEGIN + "\n" + block.strip() + "\n" + END + rest.split(END, 1)[1]


def write_tables(out: Path, ours: str, pages: bool | None = None) -> str:
    """Write the tables of OUT/rows.jsonl; the pages too when OUT is the repository's results (or ``pages``)."""
    from compare_tables import aggregate, markdown, verdict  # bootstrap intervals: numpy

    out = Path(out)
    current, old = split_rows(rowsfile.load_rows(out / "rows.jsonl"))
    table = aggregate(current)
    (out / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    text = markdown(table) + "\n\n" + verdict(table, ours=ours) + "\n"
    (out / "table.md").write_text(text)
    if old:
        old_table = aggregate(old)
        (out / "table-old-versions.md").write_text(
            "# Rows of earlier task versions (left out of table.md: the task's splits or data changed since)\n\n"
            + markdown(old_table) + "\n\n" + verdict(old_table, ours=ours) + "\n")
    if pages if pages is not None else out.resolve() == RESULTS.resolve():
        defaults = load_defaults()
        head = headline(table, lambda t: sizes_of(defaults, t))
        link = "Every method, wall times and calls: [experiments/results/compare/table.md]" \
               "(experiments/results/compare/table.md); how to read it: [experiments/results/README.md]" \
               "(experiments/results/README.md)."
        write_page(PAGES[0], head + "\n\n" + link)
        write_page(PAGES[1], head + "\n\n" + verdict(table, ours=ours)
                   + "\n\nEvery method, wall times and calls: [compare/table.md](compare/table.md).")
    return text


def write_page(path: Path, block: str) -> None:
    path.write_text(replace_block(path.read_text(), block + "\n\n_Generated by experiments/make_tables.py "
                                  "from experiments/results/compare/rows.jsonl; do not edit by hand._", str(path)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=str(RESULTS / "rows.jsonl"), help="the rows file (its folder gets the tables)")
    ap.add_argument("--ours", default=None, help="the verdict's method (default: suites.yaml's defaults.ours)")
    args = ap.parse_args(argv)
    ours = args.ours or load_defaults()["ours"]
    print(write_tables(Path(args.rows).parent, ours=ours))
    return 0


if __name__ == "__main__":
    sys.exit(main())
