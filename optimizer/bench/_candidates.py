"""Bench candidates: ``--candidates`` arguments (run directories, exports, DSPy programs, candidates
files) read into named candidates, each checked to render to the prompt it stands for."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..adapters import field_prefix
from ..artifacts import artifact_template
from ..data import Example, load_raw, to_examples
from ..errors import ConfigError
from ..evaluate import Evaluator
from ..program import Candidate, demo_dicts
from ..runread import FinishedRun, demo_to_example, predictor_state
from ..scoring import SCORINGS, offsets_from_json
from ..task import TaskSpec


@dataclass
class BenchCandidate:
    name: str
    candidate: Candidate
    source: str  # the --candidates argument
    kind: str  # run | run-baseline | candidates-file | export-<format> | dspy-program

    def describe(self, task: TaskSpec) -> dict[str, Any]:
        c = self.candidate
        if c.steps:  # a program: every step's instruction and demos
            steps = [{"name": st.name, "instruction": sc.instruction, "n_demos": sc.knn or len(sc.demos), "knn": sc.knn,
                      "demo_ids": [d.id for d in sc.demos], "demos": demo_dicts(task.step_task(i), sc.demos)}
                     for i, (st, sc) in enumerate(zip(task.steps or [], c.steps))]
            return {"name": self.name, "source": self.source, "kind": self.kind, "key": c.key, "instruction": "",
                    "n_demos": sum(s["n_demos"] for s in steps), "demo_ids": [], "demos": [], "steps": steps}
        return {"name": self.name, "source": self.source, "kind": self.kind, "key": self.candidate.key,
                "instruction": self.candidate.instruction, "n_demos": len(self.candidate.demos),
                "demo_ids": [d.id for d in self.candidate.demos],
                "demos": demo_dicts(task, self.candidate.demos)}


def _example_index(task: TaskSpec) -> dict[str, Example]:
    raw = load_raw(task)
    return {e.id: e for src, rows in raw.items() for e in to_examples(task, src, rows)}


class _Demos:
    """Turns demo entries (field-value mappings or example ids) into Examples."""

    def __init__(self, task: TaskSpec):
        self.task = task
        self._index: dict[str, Example] | None = None

    def __call__(self, entries: Any, where: str) -> tuple[Example, ...]:
        if entries in (None, ""):
            return ()
        if not isinstance(entries, list):
            raise ConfigError("demos must be a list", file=where, field="demos",
                              fix="give a list of {field: value} mappings or example ids")
        out = []
        for i, d in enumerate(entries):
            if isinstance(d, str):
                if self._index is None:
                    self._index = _example_index(self.task)
                if d not in self._index:
                    raise ConfigError(f"unknown example id {d!r}", file=where, field=f"demos.{i}",
                                      fix="use ids like train:12 (source split:row) or give the field values")
                out.append(self._index[d])
            elif isinstance(d, dict):
                try:
                    out.append(demo_to_example(self.task, d))
                except ValueError as exc:
                    raise ConfigError(str(exc), file=where, field=f"demos.{i}",
                                      fix=f"give {', '.join(self.task.input_names + [self.task.output.name])}") from None
            else:
                raise ConfigError(f"demo of type {type(d).__name__}", file=where, field=f"demos.{i}",
                                  fix="give a {field: value} mapping or an example id")
        return tuple(out)


def candidate_from_template(task: TaskSpec, evaluator: Evaluator, template: str, where: str) -> Candidate:
    """Read a rendered completion template (``{{field}}`` placeholders) back into instruction + demos.

    The candidate is re-rendered through the adapter and must give the template back exactly.
    """
    if evaluator.adapter_kind != "completion":
        raise ConfigError("a completion template can only be benched with the completion adapter",
                          file=where, field="template", fix="bench the run directory or the yaml/dspy export")
    marker = "\x00INSTRUCTION\x00"
    final = evaluator.prompt_text(Candidate(marker))
    final = final[final.index(marker) + len(marker):].lstrip("\n")
    if not template.endswith(final):
        raise ConfigError("the template does not end with the task's input block", file=where, field="template",
                          fix=f"end it with {final!r}")
    body = template[: len(template) - len(final)]
    if body and not body.endswith("\n\n"):
        raise ConfigError("the template's last block is not separated by a blank line", file=where,
                          field="template", fix="bench the run directory instead")
    body = body[:-2] if body else ""
    sig = evaluator.signature(Candidate(task.instruction))
    prefixes = [(n, field_prefix(sig, n)) for n in list(sig.input_fields) + list(sig.output_fields)]
    first = prefixes[0][1] + " "
    paragraphs = body.split("\n\n") if body else []
    instruction_parts: list[str] = []
    blocks: list[str] = []
    for para in paragraphs:
        if para.startswith(first):
            blocks.append(para)
        elif blocks:
            blocks[-1] += "\n\n" + para  # a value with a blank line in it
        else:
            instruction_parts.append(para)
    demos = []
    for block in blocks:
        values: dict[str, str] = {}
        current = None
        for line in block.split("\n"):
            hit = next(((n, p) for n, p in prefixes if n not in values and line.startswith(p + " ")), None)
            if hit is not None:
                current = hit[0]
                values[current] = line[len(hit[1]) + 1:]
            elif current is not None:
                values[current] += "\n" + line
        try:
            demos.append(demo_to_example(task, values))
        except ValueError as exc:
            raise ConfigError(f"cannot read a demo back: {exc}", file=where, field="template",
                              fix="bench the run directory or the yaml/dspy export instead") from None
    cand = Candidate("\n\n".join(instruction_parts), tuple(demos), {"source": where})
    if evaluator.prompt_text(cand) != template:
        raise ConfigError("the template does not read back as instruction + demos of this task", file=where,
                          field="template", fix="bench the run directory or the yaml/dspy export instead")
    return cand


def _read_structured(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read candidates file: {type(exc).__name__}", file=str(path),
                          fix="give a readable YAML or JSON file") from None
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"malformed {path.suffix.lstrip('.') or 'YAML'}: {str(exc).splitlines()[0][:120]}",
                          file=str(path), fix="correct the file's syntax") from None


def _export_scoring(doc: dict[str, Any]) -> dict[str, Any]:
    """How an exported artifact reads its answers (generated text, label likelihood, calibrated on a
    content-free input, or with the batch offsets it carries), as Candidate fields."""
    spec = (doc.get("prompt_optimizer") or doc).get("output_parsing") or {}
    if spec.get("rule") != "label-likelihood":
        return {"scoring": "generate"}
    if spec.get("calibration") and spec.get("calibration_source") == "validation-batch":
        return {"scoring": "batch", "offsets": offsets_from_json(spec["calibration"])}
    return {"scoring": "calibrated" if spec.get("calibration") else "likelihood"}


def _from_document(doc: Any, path: Path, task: TaskSpec, evaluator: Evaluator,
                   demos: _Demos) -> list[tuple[str | None, Candidate, str]]:
    """(name, candidate, kind) for each candidate a file holds."""
    where = str(path)
    if isinstance(doc, dict) and doc.get("format") in ("yaml", "completion", "openai-chat") and "source" in doc:
        return _from_export(doc, where, task, evaluator, demos)
    if isinstance(doc, dict) and ("signature" in doc or any(isinstance(v, dict) and "signature" in v
                                                             for v in doc.values())):
        state = predictor_state(doc)
        instruction = str((state.get("signature") or {}).get("instructions") or "")
        cand = Candidate(instruction, demos(state.get("demos") or [], where), {"source": where},
                         **_export_scoring(doc))
        return [(None, cand, "dspy-program")]
    return _from_candidates_file(doc, where, evaluator, demos)


def _from_export(doc: dict[str, Any], where: str, task: TaskSpec, evaluator: Evaluator,
                 demos: _Demos) -> list[tuple[str | None, Candidate, str]]:
    """The candidate of an ``optimize export`` file (yaml, completion or openai-chat)."""
    fmt = doc["format"]
    if fmt == "yaml" and doc.get("retrieval"):
        cand = Candidate(str(doc.get("instruction") or ""), demos(doc.get("demo_pool"), where), {"source": where},
                         **_export_scoring(doc), knn=int(doc["retrieval"].get("k") or 0))
        return [(doc.get("name"), cand, "export-yaml")]
    if fmt == "yaml":
        cand = Candidate(str(doc.get("instruction") or ""), demos(doc.get("demos"), where), {"source": where},
                         **_export_scoring(doc))
        if doc.get("template") is not None and evaluator.prompt_text(cand) != doc["template"]:
            raise ConfigError("instruction and demos do not render to the file's template", file=where,
                              field="template", fix="re-export the run, or edit instruction/demos only")
        return [(doc.get("name"), cand, "export-yaml")]
    cand = candidate_from_template(task, evaluator, artifact_template(doc, where), where)
    return [(doc.get("name"), dataclasses.replace(cand, **_export_scoring(doc)), f"export-{fmt}")]


def _from_candidates_file(doc: Any, where: str, evaluator: Evaluator,
                          demos: _Demos) -> list[tuple[str | None, Candidate, str]]:
    """The candidates of a candidates file: ``candidates:`` list, one mapping, or a top-level list."""
    entries: Any
    if isinstance(doc, dict) and "candidates" in doc:
        entries = doc["candidates"]
    elif isinstance(doc, dict) and "instruction" in doc:
        entries = [doc]
    else:
        entries = doc
    if not isinstance(entries, list) or not entries:
        raise ConfigError("no candidates found", file=where, field="candidates",
                          fix="write `candidates:` with a list of {name, instruction, demos}")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("instruction"), str):
            raise ConfigError("a candidate needs an `instruction` string", file=where, field=f"candidates.{i}",
                              fix="write {name: ..., instruction: ..., demos: [...]}")
        extra = set(e) - {"name", "instruction", "demos", "scoring"}
        if extra:
            raise ConfigError(f"unknown key {sorted(extra)[0]!r}", file=where, field=f"candidates.{i}",
                              fix="use name, instruction, demos, scoring")
        scoring = e.get("scoring", "generate")
        if scoring not in SCORINGS:
            raise ConfigError(f"unknown scoring {scoring!r}", file=where, field=f"candidates.{i}.scoring",
                              fix=f"use one of {', '.join(SCORINGS)}")
        if scoring == "batch":
            raise ConfigError("scoring 'batch' reads offsets estimated in a run", file=where,
                              field=f"candidates.{i}.scoring", fix="bench the run directory or its export, or use "
                                                                    "likelihood or calibrated here")
        evaluator.check_scoring(scoring, where=f"candidates.{i}.scoring")
        cand = Candidate(e["instruction"], demos(e.get("demos"), where), {"source": where}, scoring=scoring)
        out.append((e.get("name"), cand, "candidates-file"))
    return out


def load_candidates(specs: list[str], task: TaskSpec, evaluator: Evaluator) -> list[BenchCandidate]:
    """Resolve ``--candidates`` arguments into named candidates, in order (the first is the reference)."""
    if not specs:
        raise ConfigError("no candidates given", field="--candidates", fix="pass one or more files or run directories")
    demos = _Demos(task)
    out: list[BenchCandidate] = []
    for spec in specs:
        name: str | None = None
        target = spec
        if "=" in spec and not Path(spec).exists():
            name, _, target = spec.partition("=")
        which = "best"
        if "#" in target and not Path(target).exists():
            target, _, which = target.rpartition("#")
        path = Path(target)
        if not path.exists():
            raise ConfigError(f"candidate not found: {target}", field="--candidates",
                              fix="give a candidates file, an export or a run directory")
        if path.is_dir():
            run = FinishedRun.open(path, statuses=("finished", "stopped"))
            if run.task.task != task.task:
                raise ConfigError(f"run is for task {run.task.task!r}, not {task.task!r}", file=str(path),
                                  field="--candidates", fix="bench runs of the same task")
            cand = run.candidate(which)
            label = name or (f"{path.name}#{which}" if which != "best" else path.name)
            out.append(BenchCandidate(label, cand, spec, "run" if which == "best" else "run-baseline"))
            continue
        found = _from_document(_read_structured(path), path, task, evaluator, demos)
        for i, (doc_name, cand, kind) in enumerate(found):
            label = name if (name and len(found) == 1) else (
                f"{name}.{doc_name or i}" if name else (doc_name or (path.stem if len(found) == 1 else f"{path.stem}.{i}")))
            out.append(BenchCandidate(str(label), cand, spec, kind))
    seen: dict[str, int] = {}
    for bc in out:  # distinct names for the table
        if bc.name in seen:
            seen[bc.name] += 1
            bc.name = f"{bc.name}~{seen[bc.name]}"
        else:
            seen[bc.name] = 1
    return out


