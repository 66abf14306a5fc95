"""Programs of several steps: calls wired by field names (``steps:`` in task.yaml).

A step reads task inputs and the outputs of earlier steps and writes one field; the step that writes the
task's output gives the answer the metric scores. The steps run in ``TaskSpec.step_order`` (each after
the steps it reads). Every step is a task of one call (``TaskSpec.step_task``), rendered, parsed and
answered exactly as a one-call task is, so its own instruction and demos are searched like one.

- ``ProgramEvaluator``: where a program is scored. One ``Evaluator`` per step renders that step's call;
  the program's outcome carries every field the steps wrote (its ``prediction``), the last step's text,
  and its parse status. A failed intermediate answer is passed on as empty text, never a crash.
- ``bootstrap_traces``: demos for every step, MIPROv2's way. The seed program (each step shown up to
  ``max_demos`` demos where the data holds that step's fields) runs on training examples; the traces
  whose final answer scored well (a perfect score where any trace has one, else the better half of the
  positive scores) become examples of every step. ``step_pool`` merges them with the examples the data
  gives directly (an intermediate output's ``column``).
- The search space is ``search.space.ProgramSpace``: one ``SearchSpace`` per step, its parameters
  named ``STEP.instruction``, ``STEP.demo_set``, ... (built in ``run.space``).
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from typing import Any

from .adapters import parse_response
from .errors import ConfigError, LMCallFailed
from .evaluate import Evaluator, Outcome
from .examples import Example
from .lm.base import LMBackend, LMRequest
from .metrics import Metric
from .program import Candidate, default_max_tokens
from .rendering import SampleEvaluator
from .task import TaskSpec


class ProgramEvaluator(Evaluator):
    """The ``Evaluator`` of a task with ``steps``: a candidate holds one candidate per step (``steps``)."""

    def __init__(self, task: TaskSpec, backend: LMBackend, metric: Metric, *, adapter: str = "completion",
                 profile_max_tokens: int | None = None, temperature: float = 0.0, sample: int = 0):
        super().__init__(task, backend, metric, adapter=adapter,
                         max_tokens=default_max_tokens(task, profile_max_tokens), temperature=temperature)
        self.order = task.step_order()
        self.names = [st.name for st in task.steps or []]
        self.profile_max_tokens = profile_max_tokens
        self.sample = sample  # a distinct draw of every step's call under sampled decoding (``rendering``)
        self.steps = [SampleEvaluator(sub, backend, metric, adapter=adapter, sample=sample,
                                      max_tokens=default_max_tokens(sub, profile_max_tokens), temperature=temperature)
                      for sub in (task.step_task(i) for i in range(len(self.names)))]

    # -- what a program does not have: one request, label readouts ---------------------------------------
    def scorings(self, wanted: list[str], probe: Example | None = None) -> list[str]:
        for s in wanted:
            if s != "auto":
                self.check_scoring(s)
        return ["generate"]

    def check_scoring(self, scoring: str, where: str = "optimizer.scoring") -> None:
        if scoring != "generate":
            raise ConfigError(f"scoring {scoring!r} reads one call's label log-probabilities; a program of steps "
                              "reads its answer from the last step's text", file=str(self.task.path), field=where,
                              fix="use scoring: [generate] for a task with steps (or leave scoring out)")

    def request(self, candidate: Candidate, inputs: dict[str, Any], exclude: str | None = None) -> LMRequest:
        raise TypeError("a program of steps makes one request per step: use step_request")

    # -- rendering ----------------------------------------------------------------------------------------
    def seed(self) -> Candidate:
        """The seed program: every step's seed instruction, no demos."""
        return self.program([Candidate(ev.task.instruction) for ev in self.steps])

    def program(self, steps: list[Candidate], origin: dict[str, Any] | None = None) -> Candidate:
        return Candidate("", (), origin or {"scoring": "generate"}, steps=tuple(steps))

    def step_of(self, candidate: Candidate, i: int) -> Candidate:
        return candidate.steps[i] if candidate.steps else Candidate(self.steps[i].task.instruction)

    def step_request(self, candidate: Candidate, i: int, values: dict[str, Any],
                     exclude: str | None = None) -> LMRequest:
        """Step ``i``'s call given the values known so far (its inputs; a missing one is empty text)."""
        ev = self.steps[i]
        return ev.request(self.step_of(candidate, i), {f: values.get(f, "") for f in ev.task.input_names}, exclude)

    def prompt_text(self, candidate: Candidate, inputs: dict[str, Any] | None = None) -> str:
        """Every step's prompt in the order they run, each under a ``## step NAME`` line (placeholders for
        the values not given: the task inputs, or the fields earlier steps write)."""
        parts = []
        for i in self.order:
            ev = self.steps[i]
            values = {f: (inputs or {}).get(f, "{{" + f + "}}") for f in ev.task.input_names}
            parts.append(f"## step {self.names[i]}\n" + ev.prompt_text(self.step_of(candidate, i), values))
        return "\n\n".join(parts)

    # -- running ------------------------------------------------------------------------------------------
    def chain(self, candidate: Candidate, inputs: dict[str, Any], exclude: str | None = None) -> ChainResult:
        """The steps run in turn on one input (``exclude``: its example id, kept out of every step's demos)."""
        values: dict[str, Any] = dict(inputs)
        res = ChainResult()
        for i in self.order:
            ev = self.steps[i]
            resp = self.backend.complete(self.step_request(candidate, i, values, exclude))
            sig = ev.signature(self.step_of(candidate, i))
            parsed, res.parsed = parse_response(ev.adapter, sig, resp.text)
            for name in sig.output_fields:  # every field the step writes, its answer last
                values[name] = res.written[name] = str(parsed.get(name) or "")
            res.prompt_tokens += resp.prompt_tokens
            res.completion_tokens += resp.completion_tokens
            res.text = resp.text
        return res

    def run_one(self, candidate: Candidate, example: Example) -> Outcome:
        key = (candidate.key, example.id)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        res = self.chain(candidate, example.inputs, example.id)
        score = float(self.metric(example, res.written))
        out = Outcome(example.id, score, res.written, res.text, res.parsed, res.prompt_tokens)
        self._memo[key] = out
        return out


@dataclass
class ChainResult:
    """One run of a program: the fields its steps wrote, the last step's text and parse status, its tokens."""
    written: dict[str, str] = field(default_factory=dict)
    text: str = ""
    parsed: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0


# ------------------------------------------------------------------------------ demos of every step

def labelled_values(task: TaskSpec, ex: Example) -> dict[str, str]:
    """What the data says about one example: its inputs, the intermediate fields it holds, the answer."""
    return {**ex.inputs, **ex.extras, task.output.name: ex.output}


def step_examples(task: TaskSpec, i: int, traces: list[tuple[str, dict[str, str]]]) -> list[Example]:
    """Step ``i``'s examples from traces ``(example id, field values)`` that hold every field it reads and
    the one it writes (non-empty)."""
    assert task.steps is not None
    st = task.steps[i]
    *extra, out = [f.name for f in task.step_outputs(st)]
    return [Example(tid, {f: vals[f] for f in st.inputs}, vals[out], extras={f: vals[f] for f in extra})
            for tid, vals in traces if all(vals.get(f) for f in st.inputs + extra + [out])]


def keep_threshold(scores: list[float]) -> float:
    """The score a trace needs to be kept: a perfect one where any trace has it, else the median of the
    positive scores (never 0: a trace whose answer scored nothing teaches nothing)."""
    if any(s >= 1.0 - 1e-9 for s in scores):
        return 1.0 - 1e-9
    positive = [s for s in scores if s > 0]
    return statistics.median(positive) if positive else float("inf")


def bootstrap_traces(ev: ProgramEvaluator, train: list[Example], seed: int, n: int,
                     max_demos: int) -> tuple[list[tuple[str, dict[str, str]]], dict[str, Any]]:
    """Traces of the seed program on ``n`` training examples (seeded draw) that scored well, and notes.
    Each step of the teacher shows up to ``max_demos`` demos taken from the data where it holds that step's
    fields; an example is never its own demo."""
    task = ev.task
    labelled = [(ex.id, labelled_values(task, ex)) for ex in train]
    rng = random.Random(f"{seed}:program-bootstrap")
    teacher = ev.program([Candidate(sub.task.instruction, tuple(step_examples(task, i, labelled)[:max_demos]))
                          for i, sub in enumerate(ev.steps)], {"role": "bootstrap-teacher"})
    run = rng.sample(list(train), min(n, len(train)))
    results: list[tuple[Example, Outcome]] = []
    failed = 0
    for ex in run:
        try:
            results.append((ex, ev.run_one(teacher, ex)))
        except LMCallFailed:
            failed += 1
    need = keep_threshold([o.score for _, o in results])
    kept = [(ex.id, {**ex.inputs, **o.prediction}) for ex, o in results if o.score >= need]
    notes = {"ran": len(results), "failed_calls": failed, "kept": len(kept),
             "threshold": None if need == float("inf") else round(need, 6),
             "teacher_demos": {ev.names[i]: len(c.demos) for i, c in enumerate(teacher.steps)}}
    return kept, notes


def step_pool(task: TaskSpec, i: int, train: list[Example], traces: list[tuple[str, dict[str, str]]]
              ) -> list[Example]:
    """Step ``i``'s demo pool: the kept traces first, then the data's examples of it (one per example id)."""
    labelled = [(ex.id, labelled_values(task, ex)) for ex in train]
    pool: dict[str, Example] = {}
    for e in step_examples(task, i, traces) + step_examples(task, i, labelled):
        pool.setdefault(e.id, e)
    return list(pool.values())
