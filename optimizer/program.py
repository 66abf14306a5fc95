"""Programs: DSPy signatures and modules built from a task, and the candidates the search explores.

A ``Candidate`` is what the optimizer varies: an instruction, an ordered
tuple of demos, and how the answer is read off the LM (``scoring``: generated
text, or label likelihood with or without contextual calibration; see
``optimizer.scoring``). ``build_program`` turns one into a real DSPy module
(``dspy.Predict`` or ``dspy.ChainOfThought``) whose saved JSON is the run's
``best_program.json``; load it with ``build_program(task).load(path)``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import dspy

from .examples import Example
from .task import TaskSpec


@dataclass(frozen=True)
class Candidate:
    instruction: str
    demos: tuple[Example, ...] = ()
    origin: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    scoring: str = "generate"  # "generate" | "likelihood" | "calibrated" | "batch"
    knn: int = 0  # > 0: ``demos`` is a pool; each input gets its ``knn`` most similar pool demos (TF-IDF)
    # batch scoring: the (label, offset) pairs estimated on the validation inputs, fixed with the prompt
    offsets: tuple[tuple[str, float], ...] = ()
    # a program of several steps (``optimizer.steps``): one candidate per step, in the task's step order;
    # the program's own instruction and demos are then empty
    steps: tuple["Candidate", ...] = ()

    @property
    def key(self) -> str:
        if self.steps:
            return hashlib.sha1(json.dumps(["steps", [s.key for s in self.steps]]).encode()).hexdigest()[:16]
        parts: list[Any] = [self.instruction, [d.id for d in self.demos]]
        if self.scoring != "generate" or self.knn:
            parts.append(self.scoring)
        if self.knn:
            parts.append(self.knn)
        if self.offsets:
            parts.append([[lab, round(v, 9) if math.isfinite(v) else None] for lab, v in self.offsets])
        blob = json.dumps(parts)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=256)
def _signature(task_json: str, program: str, instruction: str) -> type[dspy.Signature]:
    task = json.loads(task_json)
    fields: dict[str, tuple[type, Any]] = {}
    prefixes: dict[str, str] = {}
    for f in task["inputs"]:
        fields[f["name"]] = (str, dspy.InputField(desc=f.get("description") or ""))
        prefixes[f["name"]] = f["label"]
    formats: dict[str, str] = {}
    for extra in task.get("extra_outputs") or []:  # fields written before the output (a step's several)
        fields[extra["name"]] = (str, dspy.OutputField(desc=extra.get("description") or ""))
        prefixes[extra["name"]] = extra["label"]
        if extra.get("format"):
            formats[extra["name"]] = extra["format"]
    out = task["output"]
    desc = out.get("description") or ""
    if out.get("labels"):
        labels = list(dict.fromkeys(out["labels"].values()))
        desc = (desc + " " if desc else "") + "One of: " + ", ".join(labels) + "."
    schema = json.loads(out["schema"]) if out.get("schema") else None
    if out.get("format") == "json":
        desc = (desc + " " if desc else "") + _json_desc(schema)
    fields[out["name"]] = (str, dspy.OutputField(desc=desc))
    prefixes[out["name"]] = out["label"]
    sig = dspy.make_signature(fields, instruction, signature_name="TaskSignature")
    if program == "chain_of_thought":
        sig = sig.prepend(name="reasoning", field=dspy.OutputField(desc="${reasoning}"), type_=str)
        prefixes["reasoning"] = "Reasoning"
    for name, prefix in prefixes.items():
        extra = sig.fields[name].json_schema_extra
        if extra is not None:
            extra["prefix"] = prefix + ":"
    for name, fmt in formats.items():
        extra = sig.fields[name].json_schema_extra
        if extra is not None:
            extra["format"] = fmt
    extra = sig.fields[out["name"]].json_schema_extra
    if out.get("format") and extra is not None:  # how the answer is read (``answers``); line when absent
        extra["format"] = out["format"]
        if schema is not None:
            extra["schema"] = schema
    return sig


def _json_desc(schema: dict[str, Any] | None) -> str:
    """What a chat model reads about a JSON answer: an object, its keys when the schema names them, and the
    values a key may take when the schema lists them (``enum``)."""
    props = (schema or {}).get("properties") or {}
    keys = [k + (" (one of: " + ", ".join(str(v) for v in p["enum"]) + ")" if isinstance(p, dict)
                 and isinstance(p.get("enum"), list) else "") for k, p in props.items()]
    return "A JSON object" + (" with keys " + ", ".join(keys) if keys else "") + "."


def _task_key(task: TaskSpec) -> str:
    output: dict[str, Any] = {"name": task.output.name, "label": task.output.label,
                              "description": task.output.description, "labels": task.output.labels}
    if task.output.format:
        # the schema as text: its keys keep their order (the key is dumped with sorted keys)
        output.update(format=task.output.format, schema=None if task.output.json_schema is None
                      else json.dumps(task.output.json_schema))
    key: dict[str, Any] = {
        "inputs": [{"name": f.name, "label": f.label, "description": f.description} for f in task.inputs],
        "output": output,
    }
    if task.extra_outputs:
        key["extra_outputs"] = [{"name": f.name, "label": f.label, "description": f.description, "format": f.format}
                                for f in task.extra_outputs]
    return json.dumps(key, sort_keys=True)


def make_signature(task: TaskSpec, instruction: str | None = None) -> type[dspy.Signature]:
    """The task's signature (with ``reasoning`` first for chain_of_thought)."""
    return _signature(_task_key(task), task.program, task.instruction if instruction is None else instruction)


def demo_dicts(task: TaskSpec, demos: tuple[Example, ...] | list[Example]) -> list[dict[str, str]]:
    out = []
    for d in demos:
        dd = d.to_dict(task.output.name)
        if task.program != "chain_of_thought":
            dd.pop("reasoning", None)
        out.append(dd)
    return out


class StepProgram(dspy.Module):
    """A program of several steps as a DSPy module: one ``dspy.Predict`` per step, named by the step, each
    fed the task inputs and the outputs of the steps before it; returns every field it wrote."""

    def __init__(self, task: TaskSpec, steps: tuple[Candidate, ...] | None = None):
        super().__init__()
        self._order = [task.steps[i].name for i in task.step_order()]  # type: ignore[index]
        self._reads = {st.name: list(st.inputs) for st in task.steps or []}
        self._writes = {st.name: [f.name for f in task.step_outputs(st)] for st in task.steps or []}
        for i, st in enumerate(task.steps or []):
            sub = task.step_task(i)
            cand = steps[i] if steps else Candidate(st.instruction)
            setattr(self, st.name, build_program(sub, cand))

    def forward(self, **inputs: Any) -> dspy.Prediction:
        values = dict(inputs)
        for name in self._order:
            out = getattr(self, name)(**{f: values[f] for f in self._reads[name]})
            values.update({f: getattr(out, f) for f in self._writes[name]})
        return dspy.Prediction(**{f: values[f] for fs in self._writes.values() for f in fs})


def build_program(task: TaskSpec, candidate: Candidate | None = None) -> dspy.Module:
    """A DSPy module for the task, carrying the candidate's instruction and demos (a program of steps:
    a ``StepProgram`` holding one predictor per step)."""
    if task.steps:
        return StepProgram(task, candidate.steps if candidate is not None and candidate.steps else None)
    candidate = candidate or Candidate(task.instruction)
    base = _signature(_task_key(task), "predict", candidate.instruction)
    if task.program == "chain_of_thought":
        program: dspy.Module = dspy.ChainOfThought(base)
        predictor = program.predict
        sig = make_signature(task, candidate.instruction)
        predictor.signature = sig
    else:
        program = dspy.Predict(base)
        predictor = program
    predictor.demos = [dspy.Example(**d) for d in demo_dicts(task, candidate.demos)]
    return program


def default_max_tokens(task: TaskSpec, profile_max: int | None = None) -> int:
    if task.max_tokens:
        return task.max_tokens
    if profile_max:
        return profile_max
    return 256 if task.program == "chain_of_thought" else 16
