"""Writes data/{train,test}.jsonl from ../gsm8k/data/{train,test}.jsonl (the first 500 train and 300 test
problems): each problem's question and its worked solution as two input fields, and what the solution says as
one JSON object, {"result": the final number, "steps": the solution's number of lines}.

The solution is the reference solution without its "#### N" line and without the calculator annotations
(``<<48/2=24>>``); nothing else is changed.

    python tasks/gsm8k_extract/make_data.py
"""

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIMITS = {"train": 500, "test": 300}
CALC = re.compile(r"<<[^>]*>>")


def row(problem: dict) -> dict:
    worked, final = problem["answer"].rsplit("####", 1)
    lines = [CALC.sub("", line).strip() for line in worked.strip().splitlines() if line.strip()]
    result = float(final.strip().replace(",", ""))
    return {"question": problem["question"].strip(), "solution": "\n".join(lines),
            "answer": {"result": int(result) if result.is_integer() else result, "steps": len(lines)}}


def main() -> None:
    for split, limit in LIMITS.items():
        src = HERE.parent / "gsm8k" / "data" / f"{split}.jsonl"
        problems = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines()[:limit]]
        rows = [row(p) for p in problems]
        (HERE / "data" / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                      encoding="utf-8")
        print(f"{split}: {len(rows)} rows")


if __name__ == "__main__":
    main()
