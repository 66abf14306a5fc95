"""Reading a finished run directory back (the reader side of ``optimizer.rundir``).

``FinishedRun.open(path)`` checks that the directory is a run (``summary.json``,
``task.resolved.yaml``, ``best_program.json``), rebuilds the task and the LM profile
it ran with, and gives the seed prompt and the winner back as ``Candidate`` objects
whose demos are the exact examples the optimizer used (their ids come from
``summary.json``, their text from ``best_program.json``), so re-rendering them
gives the optimizer's prompts byte for byte. Nothing here calls an LM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data import Example
from .errors import ConfigError
from .lm.profiles import LMProfile
from .program import Candidate
from .scoring import offsets_from_json
from .task import TaskSpec, task_from_dict

REQUIRED = ("summary.json", "task.resolved.yaml", "best_program.json")


def predictor_state(program_state: dict[str, Any]) -> dict[str, Any]:
    """The predictor's state in a saved DSPy program (``Predict`` at top level, ``ChainOfThought`` under a key)."""
    if isinstance(program_state.get("signature"), dict):
        return program_state
    for value in program_state.values():
        if isinstance(value, dict) and isinstance(value.get("signature"), dict):
            return value
    raise ValueError("no predictor with a signature in this program")


def demo_to_example(task: TaskSpec, demo: dict[str, Any], demo_id: str | None = None) -> Example:
    """A demo given as field values (``{sentence: ..., sentiment: ...}``) as an Example."""
    out = task.output.name
    missing = [n for n in task.input_names + [out] if n not in demo]
    if missing:
        raise ValueError(f"demo lacks field(s) {', '.join(missing)}")
    inputs = {n: str(demo[n]) for n in task.input_names}
    if demo_id is None:
        import hashlib

        blob = json.dumps([inputs, str(demo[out]), demo.get("reasoning")], sort_keys=True)
        demo_id = "demo:" + hashlib.sha1(blob.encode()).hexdigest()[:12]
    rationale = demo.get("reasoning")
    extras = {f.name: str(demo[f.name]) for f in task.extra_outputs if demo.get(f.name) not in (None, "")}
    return Example(id=demo_id, inputs=inputs, output=str(demo[out]), rationale=str(rationale) if rationale else None,
                   extras=extras)


@dataclass
class FinishedRun:
    path: Path
    task: TaskSpec
    profile: LMProfile
    summary: dict[str, Any]
    status: str
    program_state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path, *, statuses: tuple[str, ...] = ("finished",)) -> "FinishedRun":
        """Open a run whose status is one of ``statuses`` (``stopped``: a budget ended it before the test phase)."""
        p = Path(path)
        if not p.is_dir():
            raise ConfigError("run directory not found", file=str(p), fix="pass a directory written by `optimize`")
        missing = [f for f in REQUIRED if not (p / f).exists()]
        status = "unknown"
        if (p / "status.json").exists():
            try:
                status = json.loads((p / "status.json").read_text(encoding="utf-8")).get("status", "unknown")
            except (OSError, ValueError):
                status = "unknown"
        if missing:
            why = f"run status is {status!r}" if status != "unknown" else "not a run directory"
            raise ConfigError(f"{why}: {', '.join(missing)} missing", file=str(p),
                              fix="pass the directory of a finished `optimize` run")
        if status not in statuses and status != "unknown":
            why = " (a budget stopped it before the test phase)" if status == "stopped" else ""
            raise ConfigError(f"run status is {status!r}{why}", file=str(p / "status.json"), field="status",
                              fix="use a finished run (rerun the `optimize` command that made it to finish it)")
        try:
            doc = yaml.safe_load((p / "task.resolved.yaml").read_text(encoding="utf-8"))
            summary = json.loads((p / "summary.json").read_text(encoding="utf-8"))
            program_state = json.loads((p / "best_program.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read the run: {type(exc).__name__}: {str(exc)[:120]}", file=str(p),
                              fix="pass the directory of a finished `optimize` run") from None
        source = Path(doc.get("source") or p / "task.yaml")
        task = task_from_dict(doc["task"], base_dir=source.parent, name=str(p / "task.resolved.yaml"))
        try:
            profile = LMProfile.model_validate(doc.get("lm_profile") or {})
        except Exception as exc:
            raise ConfigError(f"invalid lm_profile: {str(exc).splitlines()[0][:120]}",
                              file=str(p / "task.resolved.yaml"), field="lm_profile",
                              fix="the run directory was edited; rerun `optimize`") from None
        return cls(p, task, profile, summary, status, program_state)

    # ------------------------------------------------------------------ candidates
    def candidate(self, which: str = "best") -> Candidate:
        """The winner (``best``) or the seed prompt (``baseline``) exactly as the optimizer scored it."""
        if which not in ("best", "baseline"):
            raise ConfigError(f"unknown candidate {which!r}", field="candidate", fix="use #best or #baseline")
        info = self.summary[which]
        if self.task.steps:
            return self._program_candidate(which, info)
        ids = list(info.get("demo_ids") or [])
        demos: tuple[Example, ...] = ()
        knn = int(info.get("knn") or 0)
        if ids and knn:
            pool = self.read_json("demo_pool.json")
            if not pool or pool.get("ids") != ids:
                raise ConfigError("demo_pool.json is missing or does not match summary.json",
                                  file=str(self.path / "demo_pool.json"), field="ids",
                                  fix="the run directory was edited; rerun `optimize`")
            demos = tuple(demo_to_example(self.task, d, i) for d, i in zip(pool["demos"], ids))
        elif ids:
            if which != "best":
                raise ConfigError("only the winner's demos are stored", file=str(self.path / "summary.json"),
                                  field=f"{which}.demo_ids", fix="bench the winner or give the demos in a file")
            state = predictor_state(self.program_state)
            saved = state.get("demos") or []
            if len(saved) != len(ids):
                raise ConfigError(f"best_program.json has {len(saved)} demos, summary.json lists {len(ids)}",
                                  file=str(self.path / "best_program.json"), field="demos",
                                  fix="the run directory was edited; rerun `optimize`")
            demos = tuple(demo_to_example(self.task, d, i) for d, i in zip(saved, ids))
        origin = {"instruction_origin": info.get("instruction_origin"), "demo_selector": info.get("demo_selector"),
                  "n_demos": len(demos), "run": str(self.path), "which": which}
        scoring = info.get("scoring") or "generate"
        offsets = offsets_from_json(info.get("calibration")) if scoring == "batch" else ()
        return Candidate(info["instruction"], demos, origin, scoring=scoring, knn=knn, offsets=offsets)

    def _program_candidate(self, which: str, info: dict[str, Any]) -> Candidate:
        """A program's candidate: each step's instruction from summary.json, its demos (the winner's) from that
        step's predictor in best_program.json."""
        steps = []
        by_name = {s.get("name"): s for s in info.get("steps") or []}
        for i, st in enumerate(self.task.steps or []):
            sub, step = self.task.step_task(i), by_name.get(st.name)
            if step is None:
                raise ConfigError(f"summary.json has no step {st.name!r}", file=str(self.path / "summary.json"),
                                  field=f"{which}.steps", fix="the run directory was edited; rerun `optimize`")
            ids = list(step.get("demo_ids") or [])
            demos: tuple[Example, ...] = ()
            knn = int(step.get("knn") or 0)
            if ids and knn:  # a kNN step: its pool from demo_pool.json
                pool = ((self.read_json("demo_pool.json") or {}).get("steps") or {}).get(st.name) or {}
                if pool.get("ids") != ids:
                    raise ConfigError(f"demo_pool.json is missing step {st.name!r} or does not match summary.json",
                                      file=str(self.path / "demo_pool.json"), field=f"steps.{st.name}.ids",
                                      fix="the run directory was edited; rerun `optimize`")
                demos = tuple(demo_to_example(sub, d, i) for d, i in zip(pool["demos"], ids))
            elif ids:
                saved = (self.program_state.get(st.name) or {}).get("demos") or [] if which == "best" else []
                if len(saved) != len(ids):
                    raise ConfigError(f"best_program.json has {len(saved)} demos for step {st.name!r}, summary.json "
                                      f"lists {len(ids)}", file=str(self.path / "best_program.json"),
                                      field=f"{st.name}.demos", fix="the run directory was edited; rerun `optimize`")
                demos = tuple(demo_to_example(sub, d, i) for d, i in zip(saved, ids))
            steps.append(Candidate(step["instruction"], demos, {"instruction_origin": step.get("instruction_origin"),
                                                                "demo_selector": step.get("demo_selector"),
                                                                "n_demos": knn or len(demos)}, knn=knn))
        origin = {"n_demos": sum(c.knn or len(c.demos) for c in steps), "run": str(self.path), "which": which}
        return Candidate("", (), origin, steps=tuple(steps))

    def test_predictions(self) -> list[dict[str, Any]]:
        f = self.path / "test_predictions.jsonl"
        if not f.exists():
            raise ConfigError("test_predictions.jsonl is missing (the run has no test phase)", file=str(self.path),
                              fix="pass the directory of a finished `optimize` run")
        return [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]

    def read_json(self, name: str, default: Any = None) -> Any:
        f = self.path / name
        if not f.exists():
            return default
        return json.loads(f.read_text(encoding="utf-8"))

    def trials(self) -> list[dict[str, Any]]:
        f = self.path / "trials.jsonl"
        if not f.exists():
            return []
        return [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]

    @property
    def adapter(self) -> str:
        return str(self.summary.get("adapter") or self.profile.resolved_adapter)
