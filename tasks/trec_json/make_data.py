"""Writes data/{train,test}.jsonl from ../trec/data/TREC.{train,test}: each question with its answer type as a
JSON object, {"type": coarse class, "subtype": fine class}, the class names of Li & Roth (2002) spelled out.

    python tasks/trec_json/make_data.py
"""

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
COARSE = {"ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "human", "LOC": "location",
          "NUM": "number"}
FINE = {"abb": "abbreviation", "exp": "expansion", "def": "definition", "desc": "description", "manner": "manner",
        "reason": "reason", "animal": "animal", "body": "body part", "color": "color", "cremat": "creative work",
        "currency": "currency", "dismed": "disease or medicine", "event": "event", "food": "food",
        "instru": "instrument", "lang": "language", "letter": "letter", "other": "other", "plant": "plant",
        "product": "product", "religion": "religion", "sport": "sport", "substance": "substance",
        "symbol": "symbol", "techmeth": "technique", "termeq": "equivalent term", "veh": "vehicle", "word": "word",
        "gr": "group", "ind": "individual", "title": "title", "city": "city", "country": "country",
        "mount": "mountain", "state": "state", "code": "code", "count": "count", "date": "date",
        "dist": "distance", "money": "money", "ord": "order", "perc": "percent", "period": "period",
        "speed": "speed", "temp": "temperature", "volsize": "size", "weight": "weight"}
LINE = re.compile(r"^(?P<coarse>[A-Z]+):(?P<fine>\S+) (?P<question>.*)$")


def main() -> None:
    for split in ("train", "test"):
        src = HERE.parent / "trec" / "data" / f"TREC.{split}"
        rows = []
        for line in src.read_text(encoding="latin-1").splitlines():
            m = LINE.match(line)
            if m:
                rows.append({"question": m["question"].strip(),
                             "answer": {"type": COARSE[m["coarse"]], "subtype": FINE[m["fine"]]}})
        (HERE / "data" / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                      encoding="utf-8")
        print(f"{split}: {len(rows)} rows")


if __name__ == "__main__":
    main()
