"""``optimize bench``: score several candidate prompts on the same examples, with statistics.

Candidates (``--candidates``, each optionally ``NAME=SPEC``):

- a run directory: its winner; ``RUN_DIR#baseline`` is its seed prompt;
- an export of ``optimize export`` (``yaml``, ``dspy``, ``completion``, ``openai-chat``), or any
  saved DSPy program JSON: read back into instruction + demos, and checked to render to the same
  prompt;
- a candidates file (YAML or JSON)::

      candidates:
        - name: weak
          instruction: Say positive.
          demos:                       # field values, or example ids of the task's data ("train:12")
            - {sentence: a fine film, sentiment: positive}

  (a single mapping with ``instruction`` is one candidate; a top-level list works too).

Every candidate is scored by ``optimizer.evaluate.Evaluator`` on the same examples of one split
(paired); with sampled decoding (profile ``temperature`` > 0) each example is answered
``--repeats`` times (distinct ``sample`` indices, so distinct cache keys) and its score is the mean
of the repeats. For each candidate: mean, 95% percentile-bootstrap interval, the paired difference
to the first candidate with its bootstrap interval and a p-value (exact McNemar on discordant
pairs for 0/1 scores with one repeat, paired bootstrap otherwise), prompt and completion tokens per
call (the backend's own counts), latency per call (wall time of uncached calls; where the LM cache
answered most calls, up to ``timing_calls`` calls per candidate are re-made without the cache and
timed) and cost per 1000 calls when the profile has ``prices``.

The bench directory (default ``experiments/runs/bench-<task>-<hash of the configuration>``, so the
same command finds it again) holds ``bench.json`` (configuration and results, per-example scores
included), ``results.jsonl`` (one line per call, appended as it goes), ``table.md``, ``table.csv``
and ``status.json``. A bench that stops is resumed by running the same command: finished calls are
read back from ``results.jsonl`` and the LM cache answers repeated prompts.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .data import Example, make_splits
from .errors import ConfigError
from .evaluate import Evaluator
from .lm import LMBackend, ResponseCache, create_backend, default_cache_dir
from .lm.profiles import LMProfile
from .program import Candidate, demo_dicts
from .scoring import SCORINGS, offsets_from_json
from .stats import bootstrap_ci, mcnemar, paired_bootstrap
from .task import TaskSpec

SPLITS = ("train", "validation", "test")


# ---------------------------------------------------------------------------- candidates

@dataclass
class BenchCandidate:
    name: str
    candidate: Candidate
    source: str  # the --candidates argument
    kind: str  # run | run-baseline | candidates-file | export-<format> | dspy-program

    def describe(self, task: TaskSpec) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "kind": self.kind, "key": self.candidate.key,
                "instruction": self.candidate.instruction, "n_demos": len(self.candidate.demos),
                "demo_ids": [d.id for d in self.candidate.demos],
                "demos": demo_dicts(task, self.candidate.demos)}


class SampleEvaluator(Evaluator):
    """An Evaluator whose requests carry a sample index (a distinct draw under sampled decoding)."""

    def __init__(self, *args: Any, sample: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sample = sample

    def request(self, candidate: Candidate, inputs: dict[str, Any], exclude: str | None = None):
        req = super().request(candidate, inputs, exclude)
        return dataclasses.replace(req, sample=self.sample) if self.sample else req


def renderer(task: TaskSpec, profile: LMProfile, backend: LMBackend | None = None, *, sample: int = 0) -> SampleEvaluator:
    """The Evaluator ``make_evaluator`` would build, with a sample index (backend None: rendering only)."""
    from .engine import make_evaluator

    base = make_evaluator(task, profile, backend)  # type: ignore[arg-type]
    return SampleEvaluator(task, backend, base.metric, adapter=base.adapter_kind,  # type: ignore[arg-type]
                           max_tokens=base.max_tokens, temperature=base.temperature, sample=sample)


def _example_index(task: TaskSpec) -> dict[str, Example]:
    from .data import load_raw, to_examples

    raw = load_raw(task)
    return {e.id: e for src, rows in raw.items() for e in to_examples(task, src, rows)}


class _Demos:
    """Turns demo entries (field-value mappings or example ids) into Examples."""

    def __init__(self, task: TaskSpec):
        self.task = task
        self._index: dict[str, Example] | None = None

    def __call__(self, entries: Any, where: str) -> tuple[Example, ...]:
        from .runread import demo_to_example

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
    from .adapters import field_prefix

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
            from .runread import demo_to_example

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
        from .export import artifact_template

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
    if isinstance(doc, dict) and ("signature" in doc or any(isinstance(v, dict) and "signature" in v
                                                             for v in doc.values())):
        from .runread import predictor_state

        state = predictor_state(doc)
        instruction = str((state.get("signature") or {}).get("instructions") or "")
        cand = Candidate(instruction, demos(state.get("demos") or [], where), {"source": where},
                         **_export_scoring(doc))
        return [(None, cand, "dspy-program")]
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
    from .runread import FinishedRun

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


# ---------------------------------------------------------------------------- running

@dataclass
class BenchOptions:
    split: str = "test"
    limit: int | None = None
    repeats: int = 1
    lm: str | None = None
    out: Path | None = None
    seed: int = 0
    cache: bool = True
    cache_dir: Path | None = None
    timing_calls: int = 8
    backend: LMBackend | None = None  # inject a ready backend (tests); overrides lm/cache


@dataclass
class BenchResult:
    bench_dir: Path
    doc: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _fingerprint(config: dict[str, Any]) -> str:
    keep = {k: config[k] for k in ("task", "split", "example_ids", "repeats", "adapter", "max_tokens", "temperature",
                                   "metric")}
    keep["lm"] = {k: config["lm"].get(k) for k in ("backend", "model", "model_path", "base_url", "api")}
    keep["candidates"] = [[c["name"], c["key"]] for c in config["candidates"]]
    return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:10]


def _lock(bench_dir: Path) -> int:
    """Hold the bench directory for this process (flock; released when the process ends)."""
    import fcntl

    fd = os.open(bench_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError("the bench directory is in use by another process", file=str(bench_dir), field="--out",
                          fix="wait for that bench to end, or choose another --out") from None
    return fd


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run_bench(task: TaskSpec, specs: list[str] | list[BenchCandidate], options: BenchOptions | None = None,
              on_event: Callable[..., None] | None = None) -> BenchResult:
    from .engine import resolve_lm

    opts = options or BenchOptions()
    emit = on_event or (lambda *a, **k: None)
    if opts.split not in SPLITS:
        raise ConfigError(f"unknown split {opts.split!r}", field="--split", fix="use train, validation or test")
    if opts.repeats < 1:
        raise ConfigError("--repeats must be 1 or more", field="--repeats", fix="pass --repeats 1 or more")
    if opts.limit is not None and opts.limit < 1:
        raise ConfigError("--limit must be positive", field="--limit", fix="pass --limit 1 or more")
    profile = opts.backend.profile if opts.backend is not None else resolve_lm(task, opts.lm)
    render_only = renderer(task, profile)
    candidates = [c for c in specs if isinstance(c, BenchCandidate)] if specs and isinstance(
        specs[0], BenchCandidate) else load_candidates(list(specs), task, render_only)  # type: ignore[arg-type]
    notes: list[str] = []
    repeats = opts.repeats
    if render_only.temperature == 0 and repeats > 1:
        notes.append(f"greedy decoding (temperature 0): --repeats {repeats} would repeat identical answers; "
                     "ran 1 repeat")
        repeats = 1

    emit("phase", name="data")
    splits = make_splits(task)
    examples: list[Example] = list(getattr(splits, opts.split))
    if opts.limit:
        examples = examples[: opts.limit]
    config = {
        "task": task.task, "task_file": str(task.path) if task.path else None, "split": opts.split,
        "example_ids": [e.id for e in examples], "repeats": repeats, "lm": profile.public_dict(),
        "adapter": render_only.adapter_kind, "max_tokens": render_only.max_tokens,
        "temperature": render_only.temperature, "metric": render_only.metric.name, "seed": opts.seed,
        "output_field": task.output.name,
        "candidates": [c.describe(task) for c in candidates],
    }
    fp = _fingerprint(config)
    bench_dir = Path(opts.out) if opts.out else Path("experiments") / "runs" / f"bench-{task.task}-{fp}"
    if bench_dir.exists() and not bench_dir.is_dir():
        raise ConfigError(f"{bench_dir} exists and is not a directory", field="--out", fix="choose another --out")
    bench_dir.mkdir(parents=True, exist_ok=True)
    results_file = bench_dir / "results.jsonl"
    old = bench_dir / "bench.json"
    prev: dict[str, Any] = {}
    if old.exists():
        try:
            prev = json.loads(old.read_text(encoding="utf-8"))
        except ValueError:
            prev = {}
        if prev.get("fingerprint") not in (None, fp):
            raise ConfigError("the bench directory holds a different bench (candidates, split, examples or LM differ)",
                              file=str(bench_dir), field="--out", fix="choose another --out or delete that directory")
    elif any(bench_dir.iterdir()):
        raise ConfigError("the directory is not empty and holds no bench", file=str(bench_dir), field="--out",
                          fix="choose a new --out (or an empty directory); nothing in it was changed")
    lock = _lock(bench_dir)
    try:
        config["fingerprint"] = fp
        config["started_at"] = (prev.get("config") or {}).get("started_at") or round(time.time(), 3)
        _write(old, json.dumps({"config": config, "fingerprint": fp, "status": "running"}, indent=2,
                               ensure_ascii=False) + "\n")
        _write(bench_dir / "status.json", json.dumps({"status": "running"}) + "\n")

        done: dict[tuple[str, str, int], dict[str, Any]] = {}
        timing: dict[str, list[float]] = {}
        if results_file.exists():
            for line in results_file.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash: that call is made again
                if rec.get("timing"):
                    timing.setdefault(rec["candidate"], []).append(rec["latency_s"])
                else:
                    done[(rec["candidate"], rec["example"], rec["repeat"])] = rec
                    if rec.get("latency_s") is not None:
                        timing.setdefault(rec["candidate"], []).append(rec["latency_s"])
        resumed = len(done)

        backend = opts.backend
        own_backend = backend is None
        if backend is None:
            cache = ResponseCache((opts.cache_dir or default_cache_dir()) / "lm-cache.sqlite") if opts.cache else False
            backend = create_backend(profile, cache=cache)
        evaluators = [renderer(task, profile, backend, sample=r) for r in range(repeats)]
        total = len(candidates) * len(examples) * repeats
        emit("phase", name="bench", total=total, resumed=resumed)
        t0 = time.perf_counter()
        u_start = backend.usage
        if results_file.exists() and results_file.stat().st_size:
            with open(results_file, "rb") as raw:
                raw.seek(-1, os.SEEK_END)
                cut = raw.read(1) != b"\n"
            if cut:  # a line cut short by a crash: end it, so the next record starts on its own line
                with open(results_file, "a", encoding="utf-8") as tail:
                    tail.write("\n")
        fh = open(results_file, "a", encoding="utf-8")
        status = "failed"
        warm = {"done": False}
        try:
            n = 0
            for bc in candidates:
                key = bc.candidate.key
                for r, ev in enumerate(evaluators):
                    for ex in examples:
                        n += 1
                        if (key, ex.id, r) in done:
                            emit("result", done=n, total=total, name=bc.name, resumed=True)
                            continue
                        u0 = backend.usage
                        t1 = time.perf_counter()
                        out = ev.run_one(bc.candidate, ex)
                        dt = time.perf_counter() - t1
                        du = backend.usage - u0
                        cached = du.calls == 0 or du.cache_hits > 0
                        warmup = not cached and not warm["done"]  # the first paid call loads the model: not timed
                        warm["done"] = warm["done"] or not cached
                        rec = {"candidate": key, "example": ex.id, "repeat": r, "score": out.score,
                               "prediction": out.prediction, "text": out.text, "parsed": out.parsed,
                               "prompt_tokens": du.prompt_tokens if du.calls else out.prompt_tokens,
                               "completion_tokens": du.completion_tokens if du.calls else None,
                               "cached": cached, "latency_s": None if cached or warmup else round(dt, 5)}
                        if warmup:
                            rec["warmup"] = True
                        fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                        fh.flush()
                        done[(key, ex.id, r)] = rec
                        if rec["latency_s"] is not None:
                            timing.setdefault(key, []).append(rec["latency_s"])
                        emit("result", done=n, total=total, name=bc.name, resumed=False)
                # latency: time a few uncached calls where the cache answered
                have = len(timing.get(key, []))
                want = min(opts.timing_calls, len(examples))
                if have < want:
                    emit("phase", name=f"timing {bc.name}")
                    saved_cache, backend.cache = backend.cache, None
                    try:
                        if not warm["done"]:  # load the model (or open the connection) outside the timing
                            backend.complete(evaluators[0].request(bc.candidate, examples[0].inputs))
                            warm["done"] = True
                        for ex in examples[have:want]:
                            req = evaluators[0].request(bc.candidate, ex.inputs)
                            t1 = time.perf_counter()
                            resp = backend.complete(req)
                            dt = time.perf_counter() - t1
                            rec = {"timing": True, "candidate": key, "example": ex.id, "latency_s": round(dt, 5),
                                   "prompt_tokens": resp.prompt_tokens, "completion_tokens": resp.completion_tokens}
                            fh.write(json.dumps(rec) + "\n")
                            fh.flush()
                            timing.setdefault(key, []).append(rec["latency_s"])
                    finally:
                        backend.cache = saved_cache
            status = "finished"
        finally:
            fh.close()
            usage = (backend.usage - u_start).to_dict()
            if status != "finished":
                _write(bench_dir / "status.json", json.dumps({"status": "failed"}) + "\n")
            if own_backend:
                backend.close()

        doc = summarize(config, candidates, examples, repeats, done, timing, profile, seed=opts.seed)
        doc.update({"fingerprint": fp, "status": "finished", "notes": notes, "resumed_calls": resumed,
                    "usage": usage, "wall_seconds": round(time.perf_counter() - t0, 3)})
        _write(bench_dir / "bench.json", json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        _write(bench_dir / "table.md", to_markdown(doc) + "\n")
        _write(bench_dir / "table.csv", to_csv(doc))
        _write(bench_dir / "status.json", json.dumps({"status": "finished", "wall_seconds": doc["wall_seconds"]}) + "\n")
        emit("done", doc=doc)
        return BenchResult(bench_dir, doc, notes)
    finally:
        os.close(lock)


# ---------------------------------------------------------------------------- statistics

def _is_binary(xs: list[float]) -> bool:
    return all(x in (0.0, 1.0) for x in xs)


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def summarize(config: dict[str, Any], candidates: list[BenchCandidate], examples: list[Example], repeats: int,
              done: dict[tuple[str, str, int], dict[str, Any]], timing: dict[str, list[float]], profile: LMProfile,
              *, seed: int = 0) -> dict[str, Any]:
    prices = profile.prices
    rows: list[dict[str, Any]] = []
    per_example: list[list[float]] = []
    out_name = config["output_field"]
    for bc, described in zip(candidates, config["candidates"]):
        key = bc.candidate.key
        recs = [done[(key, ex.id, r)] for ex in examples for r in range(repeats)]
        scores = [sum(done[(key, ex.id, r)]["score"] for r in range(repeats)) / repeats for ex in examples]
        per_example.append(scores)
        ci = bootstrap_ci(scores, seed=seed)
        pt = _mean([rec["prompt_tokens"] for rec in recs])
        ct = _mean([rec["completion_tokens"] for rec in recs])
        lat = timing.get(key, [])
        cost = None
        if prices is not None and pt is not None:
            cost = pt * prices.prompt_per_1k + (ct or 0.0) * prices.completion_per_1k
        rows.append({
            **described,
            "mean": round(ci.mean, 6), "ci": [round(ci.low, 6), round(ci.high, 6)], "n": ci.n,
            "parse_failures": sum(1 for rec in recs if not rec.get("parsed", True)),
            "prompt_tokens_per_call": None if pt is None else round(pt, 2),
            "completion_tokens_per_call": None if ct is None else round(ct, 2),
            "latency_s_per_call": None if not lat else round(sum(lat) / len(lat), 4),
            "latency_calls": len(lat),
            "cost_per_1000_calls": None if cost is None else round(cost, 6),
            "per_example": {ex.id: round(s, 6) for ex, s in zip(examples, scores)},
            "answers": {ex.id: [done[(key, ex.id, r)]["prediction"].get(out_name, "")
                                for r in range(repeats)] for ex in examples},
        })
    ref = per_example[0]
    binary = repeats == 1 and all(_is_binary(s) for s in per_example)
    for row, scores in zip(rows, per_example):
        if row is rows[0]:
            row["vs_reference"] = None
            continue
        diff = paired_bootstrap(ref, scores, seed=seed)
        vs = {"diff": round(diff["diff"], 6), "low": round(diff["low"], 6), "high": round(diff["high"], 6)}
        if binary:
            mc = mcnemar(ref, scores)
            vs.update({"p_value": mc["p_value"], "test": "mcnemar_exact", "reference_only": mc["a_only"],
                       "candidate_only": mc["b_only"]})
        else:
            vs.update({"p_value": diff["p_value"], "test": "paired_bootstrap"})
        row["vs_reference"] = vs
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["mean"])
    rank = 0
    last = None
    for pos, i in enumerate(order):
        if last is None or rows[i]["mean"] != last:
            rank = pos + 1
            last = rows[i]["mean"]
        rows[i]["rank"] = rank
    return {"config": config, "task": config["task"], "split": config["split"], "examples": len(examples),
            "repeats": repeats, "metric": config["metric"], "reference": rows[0]["name"],
            "p_value_test": "mcnemar_exact" if binary else "paired_bootstrap",
            "lm": {k: config["lm"].get(k) for k in ("name", "backend", "model", "base_url", "temperature")
                   if config["lm"].get(k) is not None},
            "prices": prices.model_dump() if prices is not None else None, "candidates": rows}


# ---------------------------------------------------------------------------- output

def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def table_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    ref = doc["reference"]
    head = ["rank", "candidate", "demos", "mean", "95% CI", f"Δ vs {ref} [95% CI]", "p", "prompt tokens/call",
            "latency/call", "cost/1k calls"]
    body = []
    for c in doc["candidates"]:
        vs = c.get("vs_reference")
        delta = "(reference)" if vs is None else f"{vs['diff']:+.3f} [{vs['low']:+.3f}, {vs['high']:+.3f}]"
        lat = "—" if c["latency_s_per_call"] is None else f"{c['latency_s_per_call']:.3f} s (n={c['latency_calls']})"
        body.append([str(c["rank"]), c["name"], str(c["n_demos"]), _f(c["mean"]),
                     f"[{_f(c['ci'][0])}, {_f(c['ci'][1])}]", delta, "—" if vs is None else _p(vs["p_value"]),
                     _f(c["prompt_tokens_per_call"], 1), lat, _f(c["cost_per_1000_calls"], 4)])
    return head, body


def caption(doc: dict[str, Any]) -> str:
    lm = doc["lm"]
    test = {"mcnemar_exact": "exact McNemar (0/1 scores)", "paired_bootstrap": "paired bootstrap"}[doc["p_value_test"]]
    cost = "" if doc.get("prices") else "; cost: the profile has no prices"
    return (f"{doc['task']}: {doc['split']} split, {doc['examples']} examples × {doc['repeats']} repeat(s), metric "
            f"{doc['metric']}, LM {lm.get('name')} ({lm.get('model')}); 95% percentile-bootstrap intervals; p: {test} "
            f"against {doc['reference']}{cost}")


def to_markdown(doc: dict[str, Any]) -> str:
    head, body = table_rows(doc)
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if i not in (1,) else "---" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(esc(x) for x in row) + " |" for row in body]
    return "\n".join(lines) + "\n\n" + caption(doc)


def to_csv(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["rank", "candidate", "source", "n_demos", "n", "mean", "ci_low", "ci_high", "diff_vs_reference",
                "diff_low", "diff_high", "p_value", "p_test", "prompt_tokens_per_call", "completion_tokens_per_call",
                "latency_s_per_call", "latency_calls", "cost_per_1000_calls", "parse_failures"])
    for c in doc["candidates"]:
        vs = c.get("vs_reference") or {}
        w.writerow([c["rank"], c["name"], c["source"], c["n_demos"], c["n"], c["mean"], c["ci"][0], c["ci"][1],
                    vs.get("diff", ""), vs.get("low", ""), vs.get("high", ""), vs.get("p_value", ""),
                    vs.get("test", ""), c["prompt_tokens_per_call"], c["completion_tokens_per_call"],
                    c["latency_s_per_call"], c["latency_calls"], c["cost_per_1000_calls"], c["parse_failures"]])
    return buf.getvalue()


def to_rich(doc: dict[str, Any]):
    from rich.table import Table

    head, body = table_rows(doc)
    t = Table(title=f"bench: {doc['task']} ({doc['split']}, {doc['examples']} examples)")
    for i, h in enumerate(head):
        t.add_column(h, justify="left" if i == 1 else "right")
    for row in body:
        t.add_row(*row)
    t.caption = caption(doc)
    return t
