"""Where a candidate is scored: program x examples -> one score per example.

The evaluator renders each call with the adapter, makes it through the
backend (which caches and counts), parses the answer and applies the metric.
Scores are memoised per (candidate, example), so re-scoring an example for the
same candidate (the test report, a repeated trial) costs no call.

Sequential backends (the local model): examples of one candidate are evaluated
in a row in the caller's thread, which keeps llama.cpp's prompt-prefix cache
warm. Concurrent backends (remote endpoints, ``backend.concurrent``): ``stream``
submits the examples to a bounded thread pool (``backend.max_concurrency``
workers, further limited by the backend's adaptive limiter) and yields the
outcomes **in input order**, so that what the caller does with them (reporting
to Optuna, pruning decisions) does not depend on timing.

Label-likelihood scoring (``candidate.scoring`` ``likelihood``, ``calibrated`` or ``batch``,
classification tasks, completion prompts): the same prompt asks for one token with
its top-k log-probabilities and the answer is the best label (``optimizer.scoring``);
``calibrated`` first scores a content-free input once per candidate and subtracts it;
``batch`` subtracts offsets the candidate carries, estimated by ``with_batch_offsets`` on
inputs already scored (batch calibration). Every readout of one prompt reads the same
response: the label log-probabilities are kept per (prompt, example), so scoring a prompt
under another readout costs at most its calibration call (the search's joint readouts rely
on this).

A call that still fails after the backend's retries (``LMCallFailed``) becomes
a failed ``Outcome`` when the caller tolerates failures (a search trial counts
them and fails the trial past a threshold); it is never scored 0.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import dspy

from .adapters import get_adapter, parse_response, readout_request, render_request
from .examples import Example
from .errors import ConfigError, LMCallFailed, LMError
from .lm.base import LMBackend, LMRequest, LMResponse
from .metrics import Metric, map_to_label, normalize
from .program import Candidate, demo_dicts, make_signature
from .plain_client import KnnIndex, input_text
from .scoring import TOP_K, batch_offsets, content_free_inputs, label_logprobs, pick_label
from .task import TaskSpec


@dataclass
class Outcome:
    example_id: str
    score: float
    prediction: dict[str, Any]
    text: str
    parsed: bool
    prompt_tokens: int = 0
    failed: bool = False  # the LM call failed after its retries: no score
    error: str | None = None


@dataclass
class EvalResult:
    candidate: Candidate
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def scores(self) -> list[float]:
        return [o.score for o in self.outcomes if not o.failed]

    @property
    def failed(self) -> int:
        return sum(o.failed for o in self.outcomes)

    @property
    def mean(self) -> float:
        s = self.scores
        return sum(s) / len(s) if s else float("nan")

    def by_id(self) -> dict[str, float]:
        return {o.example_id: o.score for o in self.outcomes if not o.failed}


class Evaluator:
    def __init__(self, task: TaskSpec, backend: LMBackend, metric: Metric, *, adapter: str = "completion",
                 max_tokens: int = 16, temperature: float = 0.0):
        self.task = task
        self.backend = backend
        self.metric = metric
        self.adapter_kind = adapter
        self.adapter = get_adapter(adapter)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._memo: dict[tuple[str, str], Outcome] = {}
        # label log-probabilities per (prompt, example): likelihood and calibrated read the same response
        self._labels: dict[tuple[str, str], tuple[dict[str, float], LMResponse]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._pool_lock = threading.Lock()
        self._calibration: dict[str, dict[str, float]] = {}
        self._knn: dict[tuple[str, ...], KnnIndex] = {}
        self._calibration_lock = threading.Lock()
        self._label_readouts: bool | None = None
        self.auto_note: str | None = None  # why ``auto`` fell back to generated text, when it did

    @property
    def concurrency(self) -> int:
        return self.backend.max_concurrency if getattr(self.backend, "concurrent", False) else 1

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            n = self.concurrency
            if self._pool is None or self._pool_size != n:
                if self._pool is not None:
                    self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="lm")
                self._pool_size = n
            return self._pool

    def close(self, wait: bool = False) -> None:
        """Stop the pool: queued examples are dropped; ``wait`` lets the calls in flight finish first."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)

    def signature(self, candidate: Candidate) -> type[dspy.Signature]:
        return make_signature(self.task, candidate.instruction)

    def demos_for(self, candidate: Candidate, inputs: dict[str, Any], exclude: str | None = None
                  ) -> tuple[Example, ...]:
        """The candidate's demos for one input: fixed, or its ``knn`` nearest pool demos. ``exclude`` (the
        input's example id) is never among them: a training example scored by cross-fitting is answered
        by the set without it, or by its other nearest pool examples. Splits are leakage-free, so only
        a training example's id can match a demo."""
        ids = tuple(d.id for d in candidate.demos)
        own = exclude is not None and exclude in ids
        if not candidate.knn:
            return tuple(d for d in candidate.demos if d.id != exclude) if own else candidate.demos
        index = self._knn.get(ids)
        if index is None:
            names = self.task.input_names
            index = self._knn[ids] = KnnIndex([input_text(d.inputs, names) for d in candidate.demos])
        near = index.nearest(input_text(inputs, self.task.input_names), candidate.knn + own)
        # nearest comes most similar last: dropping the example itself leaves the other k nearest
        return tuple(candidate.demos[i] for i in near if candidate.demos[i].id != exclude)[-candidate.knn:]

    def request(self, candidate: Candidate, inputs: dict[str, Any], exclude: str | None = None) -> LMRequest:
        """The rendered call for one input (``exclude``: its example id, kept out of the demos)."""
        sig = self.signature(candidate)
        demos = self.demos_for(candidate, inputs, exclude)
        req = render_request(self.adapter, sig, demo_dicts(self.task, demos), inputs,
                             max_tokens=self.max_tokens, temperature=self.temperature)
        if candidate.scoring != "generate":
            self.check_scoring(candidate.scoring)
            req = readout_request(req, sig, TOP_K)
        return req

    def scorings(self, wanted: list[str], probe: Example | None = None) -> list[str]:
        """The task's ``optimizer.scoring`` list with ``auto`` resolved, checked, without repeats. ``auto``
        picks the label readouts where they fit and, given a ``probe`` example, where one readout of the
        seed prompt on it comes back with log-probabilities (an OpenAI-compatible endpoint may ignore the
        request: then generated text, and ``auto_note`` says why)."""
        out: list[str] = []
        for s in wanted:
            if s == "auto":
                fits = bool(self.task.label_set) and self._reads_labels() and self._gives_logprobs(probe)
                out += ["likelihood", "calibrated", "batch"] if fits else ["generate"]
            else:
                self.check_scoring(s)
                out.append(s)
        return list(dict.fromkeys(out))

    def check_scoring(self, scoring: str, where: str = "optimizer.scoring") -> None:
        """Label-likelihood scoring needs a label set and a completion prompt."""
        if scoring == "generate":
            return
        if not self.task.label_set:
            raise ConfigError(f"scoring {scoring!r} needs a classification task (output.labels or metric.labels)",
                              file=str(self.task.path), field=where, fix="use scoring: [generate] for this task")
        if not self._reads_labels():
            raise ConfigError(f"scoring {scoring!r} reads next-token log-probabilities; the "
                              f"{getattr(self.backend, 'name', 'given')} "
                              f"backend does not give them for the {self.adapter_kind} adapter with this program",
                              file=str(self.task.path), field=where,
                              fix="use scoring: [generate], or a completion-style LM profile")

    def _reads_labels(self) -> bool:
        """Label readouts fit: a completion prompt, or a one-output chat program on a backend whose chat
        calls give log-probabilities."""
        if self._label_readouts is None:  # fixed for this evaluator: asked once, not on every request
            # no backend: rendering only (bench, export), of prompts a run already read labels from
            logprobs = self.backend is None or bool(getattr(self.backend, "chat_logprobs", False))
            self._label_readouts = self.adapter_kind == "completion" or (
                logprobs and len(make_signature(self.task).output_fields) == 1)
        return self._label_readouts

    def _gives_logprobs(self, probe: Example | None) -> bool:
        """One label readout of the seed prompt on ``probe`` (through the cache: the search asks the same
        request again) has log-probabilities; True without a probe (the plan, which calls no LM)."""
        if probe is None:
            return True
        resp = self.backend.complete(self.request(Candidate(self.task.instruction, scoring="likelihood"), probe.inputs))
        if not resp.logprobs:
            self.auto_note = ("scoring auto: the LM returned no log-probabilities for a label readout, so answers "
                              "are read from generated text")
        return bool(resp.logprobs)

    def _label_scores(self, resp: LMResponse) -> dict[str, float]:
        if not resp.logprobs:
            raise LMError("the LM returned no log-probabilities, which label-likelihood scoring needs",
                          file=str(self.task.path), field="optimizer.scoring",
                          fix="use an endpoint that returns logprobs (/v1/completions, or /v1/chat/completions "
                              "with top_logprobs), or scoring: [generate]")
        return label_logprobs(resp.logprobs[0], self.task.label_set or [])

    @staticmethod
    def readout_base(candidate: Candidate) -> Candidate:
        """The prompt of a label-scored candidate, whatever its readout (one LM request per example)."""
        return Candidate(candidate.instruction, candidate.demos, scoring="likelihood", knn=candidate.knn)

    def calibration(self, candidate: Candidate) -> dict[str, float] | None:
        """The offsets subtracted from label log-probabilities: contextual calibration's (label
        log-probabilities on a content-free input, once per candidate) or the batch offsets the candidate
        carries; None for the other scorings."""
        if candidate.scoring == "batch":
            if not candidate.offsets:
                raise ValueError("a batch-scored candidate carries its offsets (Evaluator.with_batch_offsets)")
            return dict(candidate.offsets)
        if candidate.scoring != "calibrated":
            return None
        base = self.readout_base(candidate)
        with self._calibration_lock:
            hit = self._calibration.get(base.key)
            if hit is None:
                resp = self.backend.complete(self.request(base, content_free_inputs(self.task.input_names)))
                hit = self._calibration[base.key] = self._label_scores(resp)
        return hit

    def with_batch_offsets(self, candidate: Candidate, examples: list[Example]) -> Candidate:
        """The candidate under batch calibration, its offsets estimated on ``examples`` (their label
        log-probabilities under this prompt: no call for those already scored under any label readout)."""
        base = self.readout_base(candidate)
        rows = []
        for ex in examples:
            if (base.key, ex.id) not in self._labels:
                self.run_one(base, ex)
            rows.append(self._labels[(base.key, ex.id)][0])
        offsets = batch_offsets(rows, self.task.label_set or [])
        return dataclasses.replace(candidate, scoring="batch", offsets=tuple(offsets.items()),
                                   origin={**candidate.origin, "scoring": "batch"})

    def prompt_text(self, candidate: Candidate, inputs: dict[str, Any] | None = None) -> str:
        """The rendered prompt as plain text (placeholders when no inputs are given)."""
        inputs = inputs or {f.name: "{{" + f.name + "}}" for f in self.task.inputs}
        req = self.request(candidate, inputs)
        if req.prompt is not None:
            return req.prompt
        return "\n\n".join(f"[{role}]\n{content}" for role, content in req.messages or ())

    def prompt_tokens(self, candidate: Candidate) -> int:
        """Approximate prompt length without the input: whitespace tokens of the rendered template."""
        return len(self.prompt_text(candidate).split())

    def run_one(self, candidate: Candidate, example: Example) -> Outcome:
        key = (candidate.key, example.id)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        sig = self.signature(candidate)
        req = self.request(candidate, example.inputs, example.id)
        if candidate.scoring == "generate":
            resp = self.backend.complete(req)
            values, ok = parse_response(self.adapter, sig, resp.text)
        else:
            offsets = self.calibration(candidate)
            lkey = (self.readout_base(candidate).key, example.id)
            got = self._labels.get(lkey)
            if got is None:  # the other readout of this prompt has not asked for this example yet
                resp = self.backend.complete(req)
                got = self._labels[lkey] = (self._label_scores(resp), resp)
            scores, resp = got
            label = pick_label(scores, offsets)
            values, ok = {self.task.output.name: label or ""}, label is not None
            resp = dataclasses.replace(resp, text=label or "")
        score = float(self.metric(example, values))
        out = Outcome(example.id, score, values, resp.text, ok, resp.prompt_tokens)
        self._memo[key] = out
        return out

    def _one(self, candidate: Candidate, example: Example, tolerate: bool) -> Outcome:
        if not tolerate:
            return self.run_one(candidate, example)
        try:
            return self.run_one(candidate, example)
        except LMCallFailed as exc:
            return Outcome(example.id, 0.0, {}, "", False, failed=True, error=str(exc))

    def stream(self, candidate: Candidate, examples: Iterable[Example], *,
               tolerate_failures: bool = False) -> Iterator[Outcome]:
        """Outcomes of ``examples`` in their order.

        Concurrent backends keep up to ``concurrency`` examples in flight ahead of the
        consumer; closing the generator early (a pruned trial) cancels those not yet
        started. With ``tolerate_failures``, an ``LMCallFailed`` becomes a failed Outcome;
        any other error (budget, auth, metric, Ctrl-C) propagates."""
        examples = list(examples)
        n = self.concurrency
        if n <= 1 or len(examples) <= 1:
            for ex in examples:
                yield self._one(candidate, ex, tolerate_failures)
            return
        pool = self._executor()
        pending: list[Future] = []
        nxt = 0
        try:
            while nxt < len(examples) and len(pending) < n:
                pending.append(pool.submit(self._one, candidate, examples[nxt], tolerate_failures))
                nxt += 1
            while pending:
                fut = pending.pop(0)
                out = fut.result()
                if nxt < len(examples):
                    pending.append(pool.submit(self._one, candidate, examples[nxt], tolerate_failures))
                    nxt += 1
                yield out
        finally:
            for fut in pending:
                fut.cancel()

    def evaluate(self, candidate: Candidate, examples: list[Example],
                 on_outcome: Callable[[Outcome], None] | None = None, *,
                 tolerate_failures: bool = False) -> EvalResult:
        t0 = time.perf_counter()
        result = EvalResult(candidate)
        for out in self.stream(candidate, examples, tolerate_failures=tolerate_failures):
            result.outcomes.append(out)
            if on_outcome:
                on_outcome(out)
        result.seconds = time.perf_counter() - t0
        return result

    def known(self, candidate: Candidate, example: Example) -> bool:
        return (candidate.key, example.id) in self._memo

    def answer(self, out: Outcome) -> str:
        """An outcome's parsed answer: the label it names (tasks with labels), else its normalised text;
        "" for none."""
        text = "" if out.failed else self.metric.predicted_text(out.prediction)
        labels = self.task.label_set
        return (map_to_label(text, labels) or "") if labels else normalize(text)


#: one answer on this share of the examples or more: the prompt has collapsed to a constant
DEGENERATE_SHARE = 0.9


def answer_distribution(answers: list[str]) -> dict[str, int]:
    """Counts of the answers, the most frequent first ("" is no answer)."""
    counts: dict[str, int] = {}
    for a in answers:
        counts[a] = counts.get(a, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def is_degenerate(answers: list[str]) -> bool:
    """One answer (not "", which is no answer) on ``DEGENERATE_SHARE`` of the examples or more."""
    top = max((n for a, n in answer_distribution(answers).items() if a), default=0)
    return bool(answers) and top >= DEGENERATE_SHARE * len(answers)
