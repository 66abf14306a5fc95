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
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

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
    def __init__(self, path: Path):
        self.path = Path(path)
        self.meta: dict[str, Any] = {}
        self.resumed = False
        self._lock_fd: int | None = None

    @classmethod
    def create(cls, path: Path | str) -> "RunDir":
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{p} exists and is not a directory", field="--out", fix="choose another --out")
        p.mkdir(parents=True, exist_ok=True)
        rd = cls(p)
        rd.write_json("status.json", {"status": "running"})
        return rd

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
        rd.write_json("status.json", {"status": "running"})
        return rd

    def _lock(self) -> None:
        import fcntl

        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"{self.path} is in use by another optimize process", field="--out",
                              fix="wait for that process to end, or choose another --out") from None
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

        if best.knn:
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

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text(encoding="utf-8"))
