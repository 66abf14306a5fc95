"""The bench run: every candidate on the same examples of one split, each call appended to the bench
directory (``rundir.BenchDir``) as it is made, then the statistics and the tables written."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

from ..data import Example, make_splits
from ..errors import ConfigError
from ..evaluate import Evaluator
from ..lm import LMBackend, ResponseCache, create_backend, default_cache_dir
from ..lm.profiles import LMProfile
from ..program import Candidate
from ..rendering import SampleEvaluator, renderer
from ..rundir import BenchDir
from ..task import TaskSpec
from ._candidates import BenchCandidate, load_candidates
from ._summary import label_prior_row, summarize
from ._table import to_csv, to_markdown

SPLITS = ("train", "validation", "test")


@dataclass
class BenchOptions:
    split: str = "test"
    limit: int | None = None
    repeats: int = 1
    lm: str | None = None
    out: Path | None = None
    #: where a bench without ``out`` gets its directory, ``bench-<task>-<hash of the configuration>`` (so the
    #: same command finds it again); the CLI passes ``experiments/runs``
    runs_dir: Path | None = None
    seed: int = 0
    cache: bool = True
    cache_dir: Path | None = None
    timing_calls: int = 8
    backend: LMBackend | None = None  # inject a ready backend (tests); overrides lm/cache
    judge_backend: LMBackend | None = None  # inject the judge metric's backend (tests); else from metric.lm


@dataclass
class BenchResult:
    bench_dir: Path
    doc: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def run_bench(task: TaskSpec, specs: list[str] | list[BenchCandidate], options: BenchOptions | None = None,
              on_event: Callable[..., None] | None = None) -> BenchResult:
    """Score the candidates (``--candidates`` arguments, or BenchCandidates) and write the bench directory.

    Events (``on_event(kind, **data)``): ``phase`` (data, bench, timing NAME), ``result`` (one per call,
    resumed or made), ``done`` (the bench document).
    """
    opts = options or BenchOptions()
    emit = on_event or (lambda *a, **k: None)
    _check_options(opts)
    profile = opts.backend.profile if opts.backend is not None else _resolve_lm(task, opts.lm)
    render_only = renderer(task, profile)
    candidates = [c for c in specs if isinstance(c, BenchCandidate)] if specs and isinstance(
        specs[0], BenchCandidate) else load_candidates(list(specs), task, render_only)  # type: ignore[arg-type]
    repeats, notes = _repeats(opts.repeats, render_only)

    emit("phase", name="data")
    splits = make_splits(task)
    examples: list[Example] = list(getattr(splits, opts.split))
    if opts.limit:
        examples = examples[: opts.limit]
    config = _config(task, opts, profile, render_only, candidates, examples, repeats)
    fp = _fingerprint(config)
    bench = BenchDir.open(_bench_dir(opts, task, fp), fp, config)
    try:
        done, timing = bench.read_results()
        resumed = len(done)
        usage, judge, t0 = _score_all(bench, task, profile, candidates, examples, repeats, opts, done, timing, emit)
        doc = summarize(config, candidates, examples, repeats, done, timing, profile, seed=opts.seed)
        if judge is not None:  # the judge metric's calls, apart from the task's
            doc["judge"] = judge
        doc["label_prior"] = label_prior_row(task, render_only, splits.train, examples, doc, opts.seed)
        doc.update({"fingerprint": fp, "status": "finished", "notes": notes, "resumed_calls": resumed,
                    "usage": usage, "wall_seconds": round(time.perf_counter() - t0, 3)})
        _write_results(bench, doc)
        emit("done", doc=doc)
        return BenchResult(bench.path, doc, notes)
    finally:
        bench.release()


def _resolve_lm(task: TaskSpec, lm: str | None) -> LMProfile:
    from ..engine import resolve_lm

    return resolve_lm(task, lm)


def _check_options(opts: BenchOptions) -> None:
    if opts.split not in SPLITS:
        raise ConfigError(f"unknown split {opts.split!r}", field="--split", fix="use train, validation or test")
    if opts.repeats < 1:
        raise ConfigError("--repeats must be 1 or more", field="--repeats", fix="pass --repeats 1 or more")
    if opts.limit is not None and opts.limit < 1:
        raise ConfigError("--limit must be positive", field="--limit", fix="pass --limit 1 or more")


def _repeats(repeats: int, render_only: Evaluator) -> tuple[int, list[str]]:
    """(repeats to run, notes): greedy decoding repeats identical answers, so it runs one."""
    notes: list[str] = []
    if render_only.temperature == 0 and repeats > 1:
        notes.append(f"greedy decoding (temperature 0): --repeats {repeats} would repeat identical answers; "
                     "ran 1 repeat")
        repeats = 1
    return repeats, notes


def _config(task: TaskSpec, opts: BenchOptions, profile: LMProfile, render_only: Evaluator,
            candidates: list[BenchCandidate], examples: list[Example], repeats: int) -> dict[str, Any]:
    return {
        "task": task.task, "task_file": str(task.path) if task.path else None, "split": opts.split,
        "example_ids": [e.id for e in examples], "repeats": repeats, "lm": profile.public_dict(),
        "adapter": render_only.adapter_kind, "max_tokens": render_only.max_tokens,
        "temperature": render_only.temperature, "metric": render_only.metric.name, "seed": opts.seed,
        "output_field": task.output.name,
        "candidates": [c.describe(task) for c in candidates],
    }


def _fingerprint(config: dict[str, Any]) -> str:
    keep = {k: config[k] for k in ("task", "split", "example_ids", "repeats", "adapter", "max_tokens", "temperature",
                                   "metric")}
    keep["lm"] = {k: config["lm"].get(k) for k in ("backend", "model", "model_path", "base_url", "api")}
    keep["candidates"] = [[c["name"], c["key"]] for c in config["candidates"]]
    return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:10]


def _bench_dir(opts: BenchOptions, task: TaskSpec, fp: str) -> Path:
    """``out``, else ``runs_dir/bench-<task>-<fingerprint>``."""
    if opts.out:
        return Path(opts.out)
    if opts.runs_dir is None:
        raise ConfigError("no bench directory given", field="--out", fix="pass --out or runs_dir")
    return Path(opts.runs_dir) / f"bench-{task.task}-{fp}"


def _score_all(bench: BenchDir, task: TaskSpec, profile: LMProfile, candidates: list[BenchCandidate],
               examples: list[Example], repeats: int, opts: BenchOptions,
               done: dict[tuple[str, str, int], dict[str, Any]], timing: dict[str, list[float]],
               emit: Callable[..., None]) -> tuple[dict[str, Any], dict[str, Any] | None, float]:
    """Make every call that results.jsonl lacks, appending each; (LM usage of these calls, the judge metric's
    usage or None, start time). A judge metric judges through one backend of its own, with the bench's
    response cache; its calls and their time are kept apart from the task's (latency is the task's alone).

    On any failure (an interruption included) status.json says ``failed`` and what was appended stays.
    """
    backend = opts.backend
    own_backend = backend is None
    if backend is None:
        cache = ResponseCache((opts.cache_dir or default_cache_dir()) / "lm-cache.sqlite") if opts.cache else False
        backend = create_backend(profile, cache=cache)
    evaluators = [renderer(task, profile, backend, sample=r) for r in range(repeats)]
    judge = _judge_backend(task, evaluators, opts.judge_backend, backend.cache)
    total = len(candidates) * len(examples) * repeats
    emit("phase", name="bench", total=total, resumed=len(done))
    t0 = time.perf_counter()
    u_start = backend.usage
    j_start = judge.usage if judge is not None else None
    fh = bench.open_results()
    status = "failed"
    try:
        calls = _Calls(backend, fh, done, timing, judge)
        n = 0
        for bc in candidates:
            n = calls.score_candidate(bc, evaluators, examples, n, total, emit)
            calls.time_candidate(bc, evaluators[0], examples, opts.timing_calls, emit)
        status = "finished"
    finally:
        fh.close()
        usage = (backend.usage - u_start).to_dict()
        if status != "finished":
            bench.write_status("failed")
        judged = None
        if judge is not None:
            judged = {"lm": task.metric.lm, **(judge.usage - j_start).to_dict()}
            if judge is not opts.judge_backend:
                judge.close()
        if own_backend:
            backend.close()
    return usage, judged, t0


def _judge_backend(task: TaskSpec, evaluators: list[Any], injected: LMBackend | None, cache: Any) -> LMBackend | None:
    """The judge metric's backend (None for a metric without an LM), attached to every evaluator's metric."""
    if not evaluators[0].metric.needs_lm:
        return None
    from ..run.inputs import judge_profile

    judge = injected or create_backend(judge_profile(task), cache=cache if cache is not None else False)
    for ev in evaluators:
        ev.metric.attach(judge)
    return judge


@dataclass
class _Calls:
    """The bench's calls: those results.jsonl holds (``done``, ``timing``) and the ones made now, each appended
    to ``fh`` as it is made."""
    backend: LMBackend
    fh: IO[str]
    done: dict[tuple[str, str, int], dict[str, Any]]
    timing: dict[str, list[float]]
    judge: LMBackend | None = None  # the judge metric's backend: its time is not the candidate's latency
    #: whether a paid call was made (the first one loads the model or opens the connection: not timed)
    warm: bool = False

    def _append(self, rec: dict[str, Any], *, ensure_ascii: bool) -> None:
        self.fh.write(json.dumps(rec, ensure_ascii=ensure_ascii) + "\n")
        self.fh.flush()

    def score_candidate(self, bc: BenchCandidate, evaluators: list[SampleEvaluator], examples: list[Example],
                        n: int, total: int, emit: Callable[..., None]) -> int:
        """Every (repeat, example) of one candidate not yet done; returns the running call count."""
        key = bc.candidate.key
        for r, ev in enumerate(evaluators):
            for ex in examples:
                n += 1
                if (key, ex.id, r) in self.done:
                    emit("result", done=n, total=total, name=bc.name, resumed=True)
                    continue
                self._score(bc.candidate, ev, ex, r)
                emit("result", done=n, total=total, name=bc.name, resumed=False)
        return n

    def _score(self, cand: Candidate, ev: SampleEvaluator, ex: Example, r: int) -> None:
        backend = self.backend
        key = cand.key
        u0 = backend.usage
        j0 = self.judge.seconds if self.judge is not None else 0.0
        t1 = time.perf_counter()
        out = ev.run_one(cand, ex)
        dt = time.perf_counter() - t1 - ((self.judge.seconds - j0) if self.judge is not None else 0.0)
        du = backend.usage - u0
        cached = du.calls == 0 or du.cache_hits > 0
        warmup = not cached and not self.warm  # the first paid call loads the model: not timed
        self.warm = self.warm or not cached
        rec = {"candidate": key, "example": ex.id, "repeat": r, "score": out.score,
               "prediction": out.prediction, "text": out.text, "parsed": out.parsed,
               "prompt_tokens": du.prompt_tokens if du.calls else out.prompt_tokens,
               "completion_tokens": du.completion_tokens if du.calls else None,
               "cached": cached, "latency_s": None if cached or warmup else round(dt, 5)}
        if warmup:
            rec["warmup"] = True
        self._append(rec, ensure_ascii=False)
        self.done[(key, ex.id, r)] = rec
        if rec["latency_s"] is not None:
            self.timing.setdefault(key, []).append(rec["latency_s"])

    def time_candidate(self, bc: BenchCandidate, ev: SampleEvaluator, examples: list[Example], timing_calls: int,
                       emit: Callable[..., None]) -> None:
        """Latency: time a few uncached calls where the cache answered (up to ``timing_calls``)."""
        key = bc.candidate.key
        have = len(self.timing.get(key, []))
        want = min(timing_calls, len(examples))
        if have >= want:
            return
        emit("phase", name=f"timing {bc.name}")
        backend = self.backend
        saved_cache, backend.cache = backend.cache, None
        try:
            if bc.candidate.steps:  # a program: one answer is all of its steps' calls
                def answer(inputs: dict[str, Any]) -> Any:
                    return ev.chain(bc.candidate, inputs)  # type: ignore[attr-defined]
            else:
                def answer(inputs: dict[str, Any]) -> Any:
                    return backend.complete(ev.request(bc.candidate, inputs))
            if not self.warm:  # load the model (or open the connection) outside the timing
                answer(examples[0].inputs)
                self.warm = True
            for ex in examples[have:want]:
                t1 = time.perf_counter()
                resp = answer(ex.inputs)
                dt = time.perf_counter() - t1
                rec = {"timing": True, "candidate": key, "example": ex.id, "latency_s": round(dt, 5),
                       "prompt_tokens": resp.prompt_tokens, "completion_tokens": resp.completion_tokens}
                self._append(rec, ensure_ascii=True)
                self.timing.setdefault(key, []).append(rec["latency_s"])
        finally:
            backend.cache = saved_cache


def _write_results(bench: BenchDir, doc: dict[str, Any]) -> None:
    bench.write_json("bench.json", doc)
    bench.write_text("table.md", to_markdown(doc) + "\n")
    bench.write_text("table.csv", to_csv(doc))
    bench.write_status("finished", wall_seconds=doc["wall_seconds"])
