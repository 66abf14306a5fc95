"""The run directory: the contract between ``optimize`` and everything that reads a run.

Files::

    task.resolved.yaml     the task as run (data paths absolute) + LM profile, seed, trials
    splits.json            example ids of train / validation / test, leakage report
    candidates.json        instruction pool and demo sets the search chose from
    study.db               the Optuna study (SQLite; optuna-dashboard can open it)
    trials.jsonl           one line per trial: params, score, examples seen, LM calls, time
    best_program.json      the winner as a DSPy program (build_program(task).load(path))
    prompt.txt             the winning prompt rendered as plain text ({{field}} placeholders)
    baseline_prompt.txt    the seed prompt, rendered the same way
    test_predictions.jsonl per test example: baseline and winner predictions and scores
    summary.json           scores, intervals, LM usage, wall time
    status.json            running / failed / interrupted / stopped (budget) / finished
    run.json               fingerprint of the run (task, seed, LM, study), worker id, study name,
                           storage URL without its password; what makes a rerun a resume
    spend.jsonl            one line per paid LM call (request hash, tokens): budgets across restarts
    .lock                  held (flock) by the process working in the directory

Resume: a run directory belongs to one run (its fingerprint). Running the same
command again opens it, takes the lock (a second process on the same directory
is refused; the lock dies with its process, SIGKILL included) and continues.
A directory that holds another run, or files that are not a run, is refused
before anything in it is touched.

``BenchDir`` is the same contract for a bench directory (``optimize bench``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import IO, Any

import yaml

from .data import Example, Splits
from .errors import ConfigError
from .lm.profiles import LMProfile
from .task import TaskSpec


def fingerprint(doc: dict[str, Any]) -> str:
    """A stable hash of what identifies a run (task as resolved, seed, LM profile, study)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


def read_meta(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(path) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_status(path: Path) -> str | None:
    try:
        return json.loads((Path(path) / "status.json").read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def find_resumable(root: Path, task_name: str, fp: str) -> Path | None:
    """The newest unfinished run directory under ``root`` of the run with fingerprint ``fp``."""
    if not root.is_dir():
        return None
    for d in sorted(root.glob(f"{task_name}-*"), reverse=True):
        meta = read_meta(d)
        if meta and meta.get("fingerprint") == fp and read_status(d) != "finished":
            return d
    return None


class RunDir:
    #: whether the lock file holds the pid of the process working in the directory
    lock_records_pid = True

    def __init__(self, path: Path):
        self.path = Path(path)
        self.meta: dict[str, Any] = {}
        self.resumed = False
        self._lock_fd: int | None = None

    @classmethod
    def check(cls, path: Path | str, fp: str) -> bool:
        """Raise unless ``path`` is absent, empty, or a run directory of the same run. True: a resume."""
        p = Path(path)
        if not p.exists():
            return False
        if not p.is_dir():
            raise ConfigError(f"{p} exists and is not a directory", field="--out", fix="choose another --out")
        meta = read_meta(p)
        if meta is None:
            if any(p.iterdir()):
                raise ConfigError(f"{p} is not empty and holds no run of this task", field="--out",
                                  fix="choose a new --out (or an empty directory); nothing in it was changed")
            return False
        if meta.get("fingerprint") != fp:
            raise ConfigError(f"{p} holds a different run (task {meta.get('task')!r}, seed {meta.get('seed')}, "
                              f"study {meta.get('study')!r})", field="--out",
                              fix="choose another --out, or run the command that made it to resume it")
        return True

    @classmethod
    def open(cls, path: Path | str, fp: str, meta: dict[str, Any]) -> "RunDir":
        """Create or reopen (resume) the run directory and take its lock."""
        resumed = cls.check(path, fp)
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        rd = cls(p)
        rd._lock()
        old = read_meta(p) or {}
        rd.resumed = resumed
        rd.meta = {**meta, "fingerprint": fp, "worker": old.get("worker") or uuid.uuid4().hex,
                   "creator": bool(old.get("creator"))}
        rd.write_json("run.json", rd.meta)
        rd.write_status("running")
        return rd

    def _busy(self) -> ConfigError:
        """The refusal when another process holds the directory's lock."""
        return ConfigError(f"{self.path} is in use by another optimize process", field="--out",
                           fix="wait for that process to end, or choose another --out")

    def _lock(self) -> None:
        """Hold the directory for this process (flock; released when the process ends, SIGKILL included)."""
        import fcntl

        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise self._busy() from None
        if self.lock_records_pid:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            import fcntl

            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    def set_meta(self, **kv: Any) -> None:
        self.meta.update(kv)
        self.write_json("run.json", self.meta)

    @property
    def spend_log(self) -> Path:
        return self.path / "spend.jsonl"

    @property
    def study_url(self) -> str:
        return f"sqlite:///{(self.path / 'study.db').resolve()}"

    def _atomic(self, name: str, text: str) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path / name)

    def write_text(self, name: str, text: str) -> None:
        self._atomic(name, text)

    def write_json(self, name: str, data: Any) -> None:
        self._atomic(name, json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def write_status(self, status: str, **extra: Any) -> None:
        """status.json: running / failed / interrupted / stopped / finished, plus ``extra`` fields."""
        self.write_json("status.json", {"status": status, **extra})

    def append_trial(self, record: dict[str, Any]) -> None:
        with open(self.path / "trials.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def write_trials(self, records: list[dict[str, Any]]) -> None:
        """Rewrite trials.jsonl from the study: one line per trial, in slot order (after a resume or
        with several workers, the live appends may hold a trial twice or miss another worker's)."""
        self._atomic("trials.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    def write_task(self, task: TaskSpec, profile: LMProfile, *, seed: int, trials: int, splits: Splits) -> None:
        resolved = task.resolved()
        resolved["optimizer"]["seed"] = seed
        resolved["optimizer"]["trials"] = trials
        doc = {"task": resolved, "lm_profile": profile.public_dict(), "source": str(task.path)}
        self._atomic("task.resolved.yaml", yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
        self.write_json("splits.json", {"ids": splits.ids(), "leakage_removed": splits.leakage,
                                        "source_sizes": splits.source_sizes})

    def write_program(self, program: Any) -> None:
        program.save(str(self.path / "best_program.json"))

    def write_winner(self, task: TaskSpec, best: Any) -> None:
        """best_program.json; for a per-input (kNN) winner the program has no fixed demos and its demo
        pool goes to demo_pool.json."""
        from .program import Candidate, build_program, demo_dicts

        if best.steps and any(sc.knn for sc in best.steps):  # a program: each kNN step's pool, by step name
            pools, steps = {}, []
            for i, (st, sc) in enumerate(zip(task.steps or [], best.steps)):
                if sc.knn:
                    pools[st.name] = {"knn": sc.knn, "ids": [d.id for d in sc.demos],
                                      "demos": demo_dicts(task.step_task(i), sc.demos)}
                    sc = Candidate(sc.instruction, (), sc.origin, scoring=sc.scoring)
                steps.append(sc)
            self.write_json("demo_pool.json", {"steps": pools})
            best = Candidate(best.instruction, (), best.origin, steps=tuple(steps))
        elif best.knn:
            self.write_json("demo_pool.json", {"knn": best.knn, "ids": [d.id for d in best.demos],
                                               "demos": demo_dicts(task, best.demos)})
            best = Candidate(best.instruction, (), best.origin, scoring=best.scoring)
        self.write_program(build_program(task, best))

    def write_predictions(self, name: str, examples: list[Example], base: Any, best: Any) -> None:
        lines = []
        for ex, b, w in zip(examples, base.outcomes, best.outcomes):
            lines.append(json.dumps({"id": ex.id, "inputs": ex.inputs, "expected": ex.output,
                                     "baseline": {"text": b.text, "prediction": b.prediction, "score": b.score},
                                     "best": {"text": w.text, "prediction": w.prediction, "score": w.score}},
                                    ensure_ascii=False))
        self._atomic(name, "\n".join(lines) + "\n")


class BenchDir(RunDir):
    """A bench directory (``optimize bench``): the same contract as a run directory (one bench per
    directory, known by its fingerprint; the same command resumes it; a second process is refused).

    Files::

        bench.json     configuration and fingerprint while running; configuration and results once finished
        results.jsonl  one line per call, appended as it goes (what a resume reads back)
        table.md       the results table (markdown), table.csv the same as CSV
        status.json    running / failed / finished, on one line
        .lock          held (flock) by the process working in the directory
    """

    lock_records_pid = False

    @classmethod
    def open(cls, path: Path | str, fp: str, meta: dict[str, Any]) -> "BenchDir":
        """Create or reopen the bench directory, take its lock and mark it running.

        ``meta`` (the bench's configuration) gets its fingerprint and the time the bench first started,
        and is written to bench.json. A directory that holds another bench, or files that are not a
        bench, is refused before anything in it is touched.
        """
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{p} exists and is not a directory", field="--out", fix="choose another --out")
        p.mkdir(parents=True, exist_ok=True)
        bd = cls(p)
        prev = bd._previous(fp)
        bd._lock()
        try:
            meta["fingerprint"] = fp
            meta["started_at"] = (prev.get("config") or {}).get("started_at") or round(time.time(), 3)
            bd.meta = meta
            bd.write_json("bench.json", {"config": meta, "fingerprint": fp, "status": "running"})
            bd.write_status("running")
        except BaseException:
            bd.release()
            raise
        return bd

    def _previous(self, fp: str) -> dict[str, Any]:
        """The bench.json already in the directory ({} when none); raise when it is another bench's."""
        old = self.path / "bench.json"
        prev: dict[str, Any] = {}
        if old.exists():
            try:
                prev = json.loads(old.read_text(encoding="utf-8"))
            except ValueError:
                prev = {}
            if prev.get("fingerprint") not in (None, fp):
                raise ConfigError("the bench directory holds a different bench (candidates, split, examples or LM "
                                  "differ)", file=str(self.path), field="--out",
                                  fix="choose another --out or delete that directory")
        elif any(self.path.iterdir()):
            raise ConfigError("the directory is not empty and holds no bench", file=str(self.path), field="--out",
                              fix="choose a new --out (or an empty directory); nothing in it was changed")
        return prev

    def _busy(self) -> ConfigError:
        return ConfigError("the bench directory is in use by another process", file=str(self.path), field="--out",
                           fix="wait for that bench to end, or choose another --out")

    def write_status(self, status: str, **extra: Any) -> None:
        self.write_text("status.json", json.dumps({"status": status, **extra}) + "\n")

    @property
    def results_file(self) -> Path:
        return self.path / "results.jsonl"

    def read_results(self) -> tuple[dict[tuple[str, str, int], dict[str, Any]], dict[str, list[float]]]:
        """The calls results.jsonl holds: (candidate key, example id, repeat) -> record, and the timed
        latencies per candidate key (uncached calls and the extra timing calls)."""
        done: dict[tuple[str, str, int], dict[str, Any]] = {}
        timing: dict[str, list[float]] = {}
        if not self.results_file.exists():
            return done, timing
        for line in self.results_file.read_text(encoding="utf-8").splitlines():
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
        return done, timing

    def open_results(self) -> IO[str]:
        """results.jsonl, open for appending (the caller closes it)."""
        results_file = self.results_file
        if results_file.exists() and results_file.stat().st_size:
            with open(results_file, "rb") as raw:
                raw.seek(-1, os.SEEK_END)
                cut = raw.read(1) != b"\n"
            if cut:  # a line cut short by a crash: end it, so the next record starts on its own line
                with open(results_file, "a", encoding="utf-8") as tail:
                    tail.write("\n")
        return open(results_file, "a", encoding="utf-8")
