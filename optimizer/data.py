"""Loading a task's examples and cutting them into train / validation / test.

Files are read through the ``datasets`` library (json, jsonl, csv, tsv, parquet,
plain text lines parsed by a regex, or a hub dataset). Fields are mapped and
labels verbalised here; nothing else touches raw rows.

Splits: each of train (demo pool), validation (search objective) and test (held
out) is drawn from a source split, shuffled with ``splits.seed``. Several
splits drawn from one source get disjoint slices. An example whose inputs
already occur in an earlier split (train < validation < test) is reported and
skipped, and the slice is refilled from the rest of the source. With
``splits.stratify`` (classification) the shuffled source is reordered so that
every stretch of it, and so every split, holds each label in about its share of
the source.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .answers import json_problem
from .errors import ConfigError, DataError
from .examples import Example, stratified_sample
from .task import TaskSpec

__all__ = ["SPLIT_ORDER", "Example", "Splits", "crossfit_examples", "load_raw", "make_splits", "proportional_order",
           "search_splits", "selection_examples", "source_overlap", "to_examples"]

SPLIT_ORDER = ("train", "validation", "test")


@dataclass
class Splits:
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    leakage: dict[str, int] = field(default_factory=dict)  # split -> examples skipped as duplicates
    source_sizes: dict[str, int] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}

    def ids(self) -> dict[str, list[str]]:
        return {"train": [e.id for e in self.train], "validation": [e.id for e in self.validation],
                "test": [e.id for e in self.test]}

    def with_validation_of(self, n: int | None) -> Splits:
        """These splits with validation grown toward ``n`` examples taken from the end of train (which
        keeps at least half of its examples); unchanged when validation has ``n`` already."""
        move = min((n or 0) - len(self.validation), len(self.train) // 2)
        if move <= 0:
            return self
        return replace(self, train=self.train[:-move], validation=self.validation + self.train[-move:])


# ------------------------------------------------------------------ raw loading

def _infer_format(path: str) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    return {"json": "json", "jsonl": "jsonl", "ndjson": "jsonl", "csv": "csv", "tsv": "tsv",
            "parquet": "parquet", "txt": "lines"}.get(suffix, "")


def _quiet_datasets() -> None:
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    logging.getLogger("datasets").setLevel(logging.ERROR)


def _load_local_split(task: TaskSpec, split: str, files: list[Path]) -> list[dict[str, Any]]:
    import datasets

    spec = task.dataset
    fmt = spec.format or _infer_format(str(files[0]))
    field_name = f"dataset.files.{split}"
    if not fmt:
        raise ConfigError(f"cannot tell the format of {files[0].name}", file=str(task.path), field="dataset.format",
                          fix=f"set dataset.format to one of json, jsonl, csv, tsv, parquet, lines")
    for f in files:
        if not f.exists():
            raise DataError(f"data file not found: {f}", file=str(task.path), field=field_name,
                            fix="correct the path (relative to the task file) or add the file")
        if f.stat().st_size == 0:
            raise DataError(f"data file is empty: {f}", file=str(task.path), field=field_name,
                            fix="point to a file with examples")
    str_files = [str(f) for f in files]
    try:
        if fmt == "lines":
            if not spec.line_pattern:
                raise ConfigError("format `lines` needs a line_pattern", file=str(task.path),
                                  field="dataset.line_pattern", fix="add a regex with named groups")
            ds = datasets.load_dataset("text", data_files=str_files, split="train", encoding=spec.encoding)
            rx = re.compile(spec.line_pattern)
            rows = []
            for i, line in enumerate(ds["text"]):
                if not line.strip():
                    continue
                m = rx.match(line.rstrip("\r\n"))
                if m is None:
                    raise DataError(f"line {i + 1} does not match line_pattern: {line[:60]!r}",
                                    file=str(task.path), field="dataset.line_pattern",
                                    fix="adjust the pattern to the file's lines")
                rows.append(m.groupdict())
            return rows
        if fmt in ("json", "jsonl"):
            kwargs = {"field": spec.json_field} if spec.json_field else {}
            ds = datasets.load_dataset("json", data_files=str_files, split="train", encoding=spec.encoding,
                                       **kwargs)
        elif fmt in ("csv", "tsv"):
            ds = datasets.load_dataset("csv", data_files=str_files, split="train", encoding=spec.encoding,
                                       delimiter="\t" if fmt == "tsv" else ",", keep_default_na=False,
                                       quoting=3 if fmt == "tsv" else 0)
        elif fmt == "parquet":
            ds = datasets.load_dataset("parquet", data_files=str_files, split="train")
        else:  # pragma: no cover - guarded by the schema
            raise ConfigError(f"unknown format {fmt}", file=str(task.path), field="dataset.format",
                              fix="use json, jsonl, csv, tsv, parquet or lines")
    except UnicodeDecodeError:
        raise DataError(f"{files[0].name} is not valid {spec.encoding} text", file=str(task.path),
                        field="dataset.encoding", fix="set dataset.encoding to the file's encoding, e.g. latin-1") from None
    except (ConfigError, DataError):
        raise
    except Exception as exc:  # datasets wraps parser errors in many types
        cause = exc
        while cause.__cause__ is not None or cause.__context__ is not None:
            nxt = cause.__cause__ or cause.__context__
            if isinstance(nxt, UnicodeDecodeError):
                raise DataError(f"{files[0].name} is not valid {spec.encoding} text", file=str(task.path),
                                field="dataset.encoding",
                                fix="set dataset.encoding to the file's encoding, e.g. latin-1") from None
            cause = nxt
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot read {', '.join(f.name for f in files)} as {fmt}: {first[:160]}",
                        file=str(task.path), field=field_name,
                        fix=f"check that the file is valid {fmt} (or set dataset.format)") from None
    return ds.to_list()


def _load_hub_split(task: TaskSpec, split: str) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(task.dataset.path, task.dataset.name, split=split)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot load dataset {task.dataset.path!r} split {split!r}: {first[:160]}",
                        file=str(task.path), field="dataset.path",
                        fix="check the name and split, or point dataset.files at local copies") from None
    return ds.to_list()


def load_raw(task: TaskSpec) -> dict[str, list[dict[str, Any]]]:
    """Raw rows of every source split the task's splits refer to."""
    _quiet_datasets()
    sources = dict.fromkeys(getattr(task.splits, s).source for s in SPLIT_ORDER)
    out: dict[str, list[dict[str, Any]]] = {}
    for src in sources:
        if task.dataset.files:
            if src not in task.dataset.files:
                raise ConfigError(f"split source {src!r} is not in dataset.files "
                                  f"({', '.join(task.dataset.files)})", file=str(task.path),
                                  field="splits", fix="name a key of dataset.files in `from:`")
            value = task.dataset.files[src]
            files = [task.base_dir / f for f in (value if isinstance(value, list) else [value])]
            rows = _load_local_split(task, src, files)
        else:
            rows = _load_hub_split(task, src)
        if task.dataset.rename:
            rows = [{task.dataset.rename.get(k, k): v for k, v in r.items()} for r in rows]
        if not rows:
            raise DataError(f"split {src!r} has no examples", file=str(task.path), field=f"dataset.files.{src}",
                            fix="point to a file with examples")
        out[src] = rows
    return out


# ------------------------------------------------------------------ mapping

def _extract(value: Any, pattern: str | None) -> str | None:
    text = "" if value is None else str(value)
    if pattern is None:
        return text.strip()
    m = re.search(pattern, text, flags=re.S)
    if m is None:
        return None
    if "value" in m.groupdict():
        return m.group("value").strip()
    return (m.group(1) if m.groups() else m.group(0)).strip()


def _gold_json(task: TaskSpec, source: str, idx: int, text: str) -> str:
    """A gold JSON answer written compactly (as answers are read), after the schema check."""
    problem = json_problem(text, task.output.json_schema)
    if problem:
        raise DataError(f"row {idx} of split {source!r}: the output is {problem}: {text[:60]!r}",
                        file=str(task.path), field="output.schema" if task.output.json_schema else "output.format",
                        fix="correct the row, or the schema, or remove `format: json`")
    return json.dumps(json.loads(text), ensure_ascii=False)


def to_examples(task: TaskSpec, source: str, rows: list[dict[str, Any]]) -> list[Example]:
    """Map raw rows to Examples; missing columns and unknown labels are DataErrors."""
    columns = set(rows[0].keys())
    for i, f in enumerate(task.inputs):
        if f.source not in columns:
            raise DataError(f"column {f.source!r} not found in split {source!r} (columns: {', '.join(sorted(columns))})",
                            file=str(task.path), field=f"inputs.{i}.column",
                            fix="set `column:` to one of the file's columns or rename it under dataset.rename")
    out_spec = task.output
    if out_spec.source not in columns:
        raise DataError(f"column {out_spec.source!r} not found in split {source!r} (columns: {', '.join(sorted(columns))})",
                        file=str(task.path), field="output.column",
                        fix="set `column:` to one of the file's columns or rename it under dataset.rename")
    if out_spec.rationale_column and out_spec.rationale_column not in columns:
        raise DataError(f"column {out_spec.rationale_column!r} not found in split {source!r}", file=str(task.path),
                        field="output.rationale_column", fix="name an existing column or remove the key")
    for where, spec in task.data_fields():
        if spec.source not in columns:
            raise DataError(f"column {spec.source!r} not found in split {source!r} (columns: {', '.join(sorted(columns))})",
                            file=str(task.path), field=f"{where}.column",
                            fix="name an existing column or remove the key (the step's demos then come from traces)")
    examples = []
    for idx, row in enumerate(rows):
        inputs = {}
        for f in task.inputs:
            val = _extract(row.get(f.source), f.pattern)
            if val is None:
                raise DataError(f"row {idx} of split {source!r}: input pattern did not match {str(row.get(f.source))[:60]!r}",
                                file=str(task.path), field=f"inputs.{f.name}.pattern", fix="adjust the pattern")
            inputs[f.name] = val
        cell = row.get(out_spec.source)
        if out_spec.answer_format == "json" and not isinstance(cell, str):  # a parsed JSON cell (jsonl)
            cell = json.dumps(cell, ensure_ascii=False)
        raw_out = _extract(cell, out_spec.pattern)
        if raw_out is not None and out_spec.answer_format == "json":
            raw_out = _gold_json(task, source, idx, raw_out)
        if raw_out is None:
            raise DataError(f"row {idx} of split {source!r}: output pattern did not match "
                            f"{str(row.get(out_spec.source))[:60]!r}", file=str(task.path), field="output.pattern",
                            fix="adjust the pattern")
        if out_spec.labels is not None:
            if raw_out not in out_spec.labels:
                raise DataError(f"row {idx} of split {source!r} has label {raw_out!r}, which is not in output.labels "
                                f"({', '.join(out_spec.labels)})", file=str(task.path), field="output.labels",
                                fix="add that label to output.labels or remove such rows from the data")
            raw_out = out_spec.labels[raw_out]
        rationale = None
        if out_spec.rationale_column:
            rationale = _extract(row.get(out_spec.rationale_column), out_spec.rationale_pattern) or None
        extras = {spec.name: val for _, spec in task.data_fields()
                  if (val := _extract(row.get(spec.source), spec.pattern))}
        examples.append(Example(id=f"{source}:{idx}", inputs=inputs, output=raw_out, rationale=rationale,
                                extras=extras))
    return examples


# ------------------------------------------------------------------ splitting

def proportional_order(labels: list[str]) -> list[int]:
    """Indices of ``labels`` interleaved so that every prefix holds each label in about its share of the
    whole: next comes the label furthest behind its share (lowest (taken + 1/2) / count, ties by label).
    Within a label the given order is kept, so shuffle first."""
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    taken = dict.fromkeys(groups, 0)
    order = []
    for _ in labels:
        label = min((lab for lab in groups if taken[lab] < len(groups[lab])),
                    key=lambda lab: ((taken[lab] + 0.5) / len(groups[lab]), lab))
        order.append(groups[label][taken[label]])
        taken[label] += 1
    return order


def make_splits(task: TaskSpec, raw: dict[str, list[dict[str, Any]]] | None = None) -> Splits:
    """Seeded, leakage-free train / validation / test splits."""
    raw = raw if raw is not None else load_raw(task)
    by_source = {src: to_examples(task, src, rows) for src, rows in raw.items()}
    shuffled: dict[str, list[Example]] = {}
    for src, exs in by_source.items():
        order = list(exs)
        random.Random(f"{task.splits.seed}:{src}").shuffle(order)
        if task.splits.stratify:
            order = [order[i] for i in proportional_order([e.output for e in order])]
        shuffled[src] = order
    cursor = {src: 0 for src in shuffled}
    seen: set[str] = set()
    chosen: dict[str, list[Example]] = {}
    leakage: dict[str, int] = {}
    for name in SPLIT_ORDER:
        spec = getattr(task.splits, name)
        pool = shuffled[spec.source]
        n_source = len(pool)
        want = n_source - cursor[spec.source]
        if spec.fraction is not None:
            want = min(want, max(1, round(spec.fraction * n_source)))
        if spec.limit is not None:
            want = min(want, spec.limit)
        picked: list[Example] = []
        own: set[str] = set()
        skipped = 0
        i = cursor[spec.source]
        while i < n_source and len(picked) < want:
            ex = pool[i]
            i += 1
            k = ex.key()
            if k in seen:
                skipped += 1  # occurs in an earlier split: leakage, removed from this one
                continue
            if k in own:
                continue  # duplicate inside one split: keep the first
            own.add(k)
            picked.append(ex)
        cursor[spec.source] = i
        if not picked:
            raise DataError(f"split {name!r} is empty after taking earlier splits from {spec.source!r}",
                            file=str(task.path), field=f"splits.{name}",
                            fix="lower the fraction or limit of earlier splits drawn from the same source")
        seen |= own
        chosen[name] = picked
        leakage[name] = skipped
    return Splits(train=chosen["train"], validation=chosen["validation"], test=chosen["test"], leakage=leakage,
                  source_sizes={s: len(v) for s, v in by_source.items()})


def search_splits(task: TaskSpec) -> Splits:
    """The splits a run searches on: the task's, with ``optimizer.min_validation`` applied."""
    return make_splits(task).with_validation_of(task.optimizer.min_validation)


def crossfit_examples(train: list[Example], n: int, seed: int, labeled: bool) -> list[Example]:
    """Up to ``n`` training examples for cross-fitted scoring (``optimizer.crossfit``): all of train when it
    has no more, else a seeded draw, label-stratified for a classification task; in train's order."""
    if n <= 0:
        return []
    if n >= len(train):
        return list(train)
    chosen = {e.id for e in stratified_sample(train, n, random.Random(f"{seed}:crossfit"), labeled)}
    return [e for e in train if e.id in chosen]


def selection_examples(task: TaskSpec, splits: Splits, seed: int) -> list[Example]:
    """What a run's trials are scored on: the validation split, then its cross-fitted training examples."""
    return splits.validation + crossfit_examples(splits.train, task.optimizer.crossfit, seed, bool(task.label_set))


def source_overlap(task: TaskSpec, raw: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """How many inputs occur in two source splits (reported by `validate`)."""
    keys = {src: {e.key() for e in to_examples(task, src, rows)} for src, rows in raw.items()}
    names = list(keys)
    out = {}
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            n = len(keys[names[a]] & keys[names[b]])
            if n:
                out[f"{names[a]}&{names[b]}"] = n
    return out
