"""Comparison harness: our optimizer against DSPy's, same LM, adapter, splits and task-LM budget.

For each task and seed it runs, on the task's LM (or the suite's ``lm``) through *our* backend (so every
call is counted and cached the same way; DSPy's optimizers reach it through a DSPy LM engine,
``optimizer.lm.dspy_engine``) with the profile's adapter (the completion format, or DSPy's ChatAdapter for
a chat profile such as local-instruct):

    majority     no LM: always the most frequent training label (classification tasks only), the floor
                 a prompt must clear to have learned more than the label prior
    seed         the seed prompt, zero-shot
    random       the seed instruction with k random labeled demos (k = 4)
    bfrs         dspy.BootstrapFewShotWithRandomSearch (4 bootstrapped + 4 labeled, 6 candidates); it takes
                 no seed (its candidate seeds are fixed), so for seed s > 0 its train set is handed over
                 shuffled by random.Random(s) (seed 0: in the split's order), which changes its labeled
                 demos and every candidate's bootstrap sample as a seed would
    mipro_light  dspy.MIPROv2(auto="light"); its prompt model writes up to PROPOSAL_TOKENS per call (rows made
                 before 2026-12-06 had it cut at the task's answer budget: 4 tokens on the classification tasks)
    mipro_medium dspy.MIPROv2(auto="medium")
    gepa         dspy.GEPA (reflection LM: the task's LM profile (the suite's lm) on its own backend, 256 tokens,
                 unless the suite's reflection_lm; its calls are the proposer calls), metric-call budget
                 matched to MIPROv2 light's task-LM calls when known
    ours         optimizer.engine.optimize with the task's settings, capped at the budget (``search_calls``:
                 every LM call before the test report, proposer calls and the confirmation of the top
                 candidates included)
    ours@PRESET  the same with an optimizer preset applied (configs/optimizer/PRESET.yaml, or an ablation
                 preset in experiments/presets/PRESET.yaml: ``preset_path``)

The budget of a (task, seed) is MIPROv2 light's task-LM calls when that row exists (run it first), else
the suite's ``budget``.

Every method's final program is scored by the same Evaluator on the same test examples. This module runs
one (task, seed, method) and returns its row (``run_method``); ``experiments/run.py`` drives it from a suite
of ``experiments/suites.yaml`` and appends the rows, with provenance, to one rows file;
``experiments/make_tables.py`` (``compare_tables``) makes the tables from the rows.

    python3 experiments/run.py --suite classification --dry-run
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

import dspy  # noqa: E402
from dspy.teleprompt.gepa import InstructionProposer  # noqa: E402

from optimizer.adapters import CompletionAdapter  # noqa: E402
from optimizer.data import Example  # noqa: E402
from optimizer.engine import RunOptions, make_evaluator, optimize, resolve_lm  # noqa: E402
from optimizer.lm import create_backend  # noqa: E402
from optimizer.lm.dspy_engine import dspy_lm  # noqa: E402
from optimizer.metrics import build_metric  # noqa: E402
from optimizer.program import Candidate, build_program, demo_dicts  # noqa: E402
from optimizer.stats import bootstrap_ci  # noqa: E402
from optimizer.steps import step_pool  # noqa: E402
from optimizer.task import apply_preset  # noqa: E402

# the tables are made from rows alone (compare_tables); re-exported for the harness's tests
from compare_tables import METHODS, aggregate, calls_to_reach, markdown, verdict  # noqa: E402,F401
from rows import preset_path  # noqa: E402


#: what DSPy's instruction writers may write per call (MIPROv2's prompt model): our LM proposer's chat budget
PROPOSAL_TOKENS = 120


def to_dspy(task, examples: list[Example]) -> list[dspy.Example]:
    return [dspy.Example(**e.to_dict(task.output.name)).with_inputs(*task.input_names) for e in examples]


def program_to_candidate(task, program) -> Candidate:
    """A compiled DSPy program as our Candidate (same instruction, same demos, same rendering); a program of
    steps: one candidate per step, from the predictor named by the step."""
    if task.steps:
        named = dict(program.named_predictors())
        steps = tuple(_predictor_candidate(task.step_task(i), named[st.name]) for i, st in enumerate(task.steps))
        return Candidate("", (), {"source": "dspy"}, steps=steps)
    return _predictor_candidate(task, program.predictors()[0])


def _predictor_candidate(task, predictor) -> Candidate:
    demos = []
    for i, d in enumerate(predictor.demos):
        d = dict(d) if not isinstance(d, dict) else d
        d = {k: v for k, v in (d.items() if isinstance(d, dict) else d.toDict().items())}
        demos.append(Example(f"dspy:{i}", {n: str(d.get(n, "")) for n in task.input_names},
                             str(d.get(task.output.name, "")), d.get("reasoning")))
    return Candidate(predictor.signature.instructions, tuple(demos), {"source": "dspy"})


def student(task, evaluator, backend):
    """The DSPy program an optimizer of DSPy's starts from; a program of steps gives each step's predictor an
    LM with that step's answer budget (as ours calls it)."""
    program = build_program(task)
    if task.steps:
        named = dict(program.named_predictors())
        for i, st in enumerate(task.steps):
            named[st.name].lm = dspy_lm(backend, max_tokens=evaluator.steps[i].max_tokens)
    return program


def dspy_metric(task, metric):
    out = task.output.name

    def score(example, pred, trace=None, *args, **kwargs):
        ex = Example("x", {n: example[n] for n in task.input_names}, example[out])
        values = {k: pred.get(k) for k in pred.keys()} if hasattr(pred, "keys") else dict(pred)
        return float(metric(ex, values))
    return score


def gepa_metric(task, metric):
    base = dspy_metric(task, metric)
    out = task.output.name

    def score(gold, pred, trace=None, pred_name=None, pred_trace=None):
        s = base(gold, pred)
        fb = "Correct." if s >= 1 else f"Wrong: expected {gold[out]!r}, got {pred.get(out)!r}."
        return dspy.Prediction(score=s, feedback=fb)
    return score


@contextlib.contextmanager
def quiet():
    """DSPy prints progress bars to stdout/stderr; keep the harness output readable."""
    logging.getLogger("dspy").setLevel(logging.ERROR)
    buf_out, buf_err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        yield


def majority_row(task, seed, splits):
    """The label-prior baseline: every input answered with the most frequent training label (no LM calls)."""
    metric = build_metric(task)
    counts = collections.Counter(e.output for e in splits.train)
    label = max(sorted(counts), key=lambda k: counts[k])  # ties: alphabetical, so the row is deterministic

    def score(examples):
        return [float(metric(e, {task.output.name: label})) for e in examples]
    test = score(splits.test)
    ci = bootstrap_ci(test, seed=seed)
    val = score(splits.validation)
    return {"task": task.task, "seed": seed, "method": "majority", "test": round(ci.mean, 4),
            "test_ci": [round(ci.low, 4), round(ci.high, 4)], "task_lm_calls": 0, "proposer_calls": 0,
            "prompt_words": 0, "n_demos": 0, "instruction": f"(no prompt: always {label!r})", "demos": [],
            "scoring": "none", "seconds": 0.0, "val": round(sum(val) / len(val), 4)}


def run_method(method, task, seed, splits, profile, cache, budget, args):
    if method == "majority":
        return majority_row(task, seed, splits)
    backend = create_backend(profile, cache=cache)
    evaluator = make_evaluator(task, profile, backend)
    # the default LM (a program's steps each get their own, ``student``): the largest answer budget, so that
    # MIPROv2's instruction proposals through it are not cut at a short step's few tokens; a chat profile's
    # budget covers the adapter's framing too (``framing_tokens``), as our evaluator's requests do
    lm = dspy_lm(backend, max_tokens=max(ev.max_tokens for ev in evaluator.steps) if task.steps
                 else evaluator.request(Candidate(task.instruction), {f.name: "" for f in task.inputs}).max_tokens)
    metric = evaluator.metric
    train, val = to_dspy(task, splits.train), to_dspy(task, splits.validation)
    t0 = time.perf_counter()
    notes = {}
    # DSPy's programs are rendered as ours are: the completion format for a base model, DSPy's own chat
    # adapter for a chat profile (local-instruct), whose answers our evaluator parses the same way
    adapter = CompletionAdapter() if profile.resolved_adapter == "completion" else dspy.ChatAdapter()
    with dspy.context(lm=lm, adapter=adapter):
        if method == "seed":
            cand = evaluator.seed() if task.steps else Candidate(task.instruction)
        elif method == "random" and task.steps:  # every step: 4 random examples of it from the data
            rng = random.Random(seed)
            pools = [step_pool(task, i, splits.train, []) for i in range(len(task.steps))]
            cand = evaluator.program([Candidate(st.instruction, tuple(rng.sample(pool, min(4, len(pool)))))
                                      for st, pool in zip(task.steps, pools)])
        elif method == "random":
            rng = random.Random(seed)
            cand = Candidate(task.instruction, tuple(rng.sample(splits.train, min(4, len(splits.train)))))
        elif method == "bfrs":
            opt = dspy.BootstrapFewShotWithRandomSearch(metric=dspy_metric(task, metric), max_bootstrapped_demos=4,
                                                        max_labeled_demos=4, num_candidate_programs=6,
                                                        num_threads=1)
            # BFRS has no seed parameter: its randomness is a function of the train order, so a seed
            # permutes that (seed 0 keeps the split's order, as the first rows ran)
            bfrs_train = train if seed == 0 else random.Random(seed).sample(train, len(train))
            with quiet():
                prog = opt.compile(student(task, evaluator, backend), trainset=bfrs_train, valset=val)
            cand = program_to_candidate(task, prog)
        elif method.startswith("mipro"):
            # its prompt model (data summary, program description, instruction proposals) writes with the
            # budget our proposer has, not the task's answer budget (rows before this fix: cut at 4 tokens on the
            # classification tasks, so proposals such as "Select 5"); same backend, so its calls are the task's
            opt = dspy.MIPROv2(metric=dspy_metric(task, metric), auto=method.split("_")[1], seed=seed,
                               prompt_model=dspy_lm(backend, max_tokens=PROPOSAL_TOKENS), num_threads=1,
                               verbose=False)
            with quiet():
                prog = opt.compile(student(task, evaluator, backend), trainset=train, valset=val)
            cand = program_to_candidate(task, prog)
        elif method == "gepa":
            # the reflection LM writes whole instructions: its own backend (the task's profile unless
            # --reflection-lm; same cache), so its calls are counted as proposer calls, with room to write
            rprof = resolve_lm(task, args.reflection_lm or args.lm)
            rb = create_backend(rprof, cache=cache)
            refl = dspy_lm(rb, max_tokens=256)
            # GEPA's proposer prompts through JSONAdapter by default; a base model never answers in that
            # format (measured: every proposal failed to parse and the run did not finish a 40-call budget
            # in 10 minutes), so a completion-adapter profile gets the plain completion format there too
            proposer = InstructionProposer(
                adapter=CompletionAdapter() if rprof.resolved_adapter == "completion" else None)
            opt = dspy.GEPA(metric=gepa_metric(task, metric), max_metric_calls=budget or 700, reflection_lm=refl,
                            instruction_proposer=proposer, num_threads=1, seed=seed)
            with quiet():
                prog = opt.compile(student(task, evaluator, backend), trainset=train, valset=val)
            cand = program_to_candidate(task, prog)
            notes["proposer_calls"] = rb.usage.calls
            notes["proposer_backend"] = "separate"  # not among the task backend's calls
            rb.close()
        elif method == "ours" or method.startswith("ours@"):
            run_task = apply_preset(task, str(preset_path(method.split("@", 1)[1]))) if "@" in method else task
            tag = method.replace("@", "-")
            marks: dict[str, float] = {}

            def on_event(kind, **kw):  # when the test report starts, the search is over
                if kind == "phase" and kw.get("name") == "test":
                    marks.setdefault("test", time.perf_counter())

            run_dir = Path(args.out) / "runs" / f"{task.task}-s{seed}-{tag}"
            if getattr(args, "fresh", False):  # a rerun: not the old run's trials again
                set_aside(run_dir)
            res = optimize(run_task, RunOptions(out=run_dir,
                                                backend=backend, seed=seed, trials=args.ours_trials,
                                                search_calls=budget), on_event=on_event)
            cand = res.best
            notes = {"val": res.summary["best"]["val"], "proposer_calls": res.summary["proposer_calls"],
                     # optimize() also scores seed and winner on test; that is reporting, not search budget
                     "report_calls": res.summary["phases"]["test"]["calls"],
                     # wall time of the search alone (DSPy's rows time compile() only), and of the report
                     "report_seconds": round(time.perf_counter() - marks["test"], 1) if "test" in marks else None}
            if res.summary["splits"]["validation"] != len(splits.validation):
                # min_validation topped the search's validation up from train: the row's val is the
                # harness's validation split, as every other method's is
                del notes["val"]
        else:
            raise SystemExit(f"unknown method {method}")
    opt_seconds = time.perf_counter() - t0 - (notes.get("report_seconds") or 0)
    used = backend.usage
    proposer_calls = notes.get("proposer_calls", 0)
    shared_proposer_calls = 0 if notes.get("proposer_backend") == "separate" else proposer_calls
    report_calls = notes.pop("report_calls", 0)
    if "val" not in notes:  # the final program's validation score (after the search; not budget)
        notes["val"] = round(evaluator.evaluate(cand, splits.validation).mean, 4)
    if method.startswith("ours"):
        notes["trajectory"] = trajectory(res.run_dir, res.summary)
    test = evaluator.evaluate(cand, splits.test)
    ci = bootstrap_ci(test.scores, seed=seed)
    row = {"task": task.task, "seed": seed, "method": method, "test": round(ci.mean, 4),
           "test_ci": [round(ci.low, 4), round(ci.high, 4)], "task_lm_calls": used.calls - shared_proposer_calls - report_calls,
           "proposer_calls": proposer_calls, "prompt_words": evaluator.prompt_tokens(cand),
           **_prompt_row(task, cand),
           "scoring": cand.scoring, "seconds": round(opt_seconds, 1), **notes}
    backend.close()
    return row


def set_aside(run_dir: Path) -> Path | None:
    """Move a run directory out of the way (the optimizer would resume it: a rerun would finish with the old
    run's trials); where it went, None if there was none."""
    if not run_dir.exists():
        return None
    dest = run_dir.with_name(f"{run_dir.name}.superseded-{time.strftime('%Y%m%dT%H%M%S')}")
    run_dir.rename(dest)
    return dest


def _prompt_row(task, cand: Candidate) -> dict:
    """The row's n_demos, instruction and demos (a program's: every step's, named)."""
    if cand.steps:
        return {"n_demos": sum(len(c.demos) for c in cand.steps),
                "instruction": " | ".join(f"{st.name}: {c.instruction}" for st, c in zip(task.steps, cand.steps)),
                "demos": {st.name: [d.to_dict(task.step_task(i).output.name) for d in c.demos]
                          for i, (st, c) in enumerate(zip(task.steps, cand.steps))}}
    return {"n_demos": cand.knn or len(cand.demos), "instruction": cand.instruction,
            "demos": [d.to_dict(task.output.name) for d in cand.demos] if not cand.knn
            else f"knn pool of {len(cand.demos)}"}


def trajectory(run_dir, summary):
    """[(LM calls so far, validation mean of the incumbent)] after each trial, setup calls included where
    they ran (the bootstrap teacher after the start trials when the summary says so); the
    incumbent is the complete trial with the best objective so far (under the balanced objective its
    plain validation mean, ``metric_mean``, is what is compared with other methods' val; with cross-fitting,
    ``val_mean``, the validation split's part alone)."""
    recs = [json.loads(x) for x in (Path(run_dir) / "trials.jsonl").read_text().splitlines() if x.strip()]
    recs.sort(key=lambda r: (r["slot"], r["trial"]))
    phases = summary["phases"]
    calls = sum(phases[k]["calls"] for k in ("proposer", "probe") if k in phases)
    # the bootstrap teacher runs after the slots the summary names (the start trials), else before all
    after = int(summary.get("bootstrap_after_slots", 0))
    teacher = phases.get("bootstrap", {}).get("calls", 0)
    calls += 0 if after else teacher
    best, out = None, []
    for r in recs:
        if after and r["slot"] >= after and teacher:
            calls, teacher = calls + teacher, 0
        calls += r["lm_calls"]
        if r["state"] == "complete" and (best is None or _rank(r) > _rank(best)):
            best = r
        out.append([calls, None if best is None else _val_of(best)])
    return out


def _rank(rec):
    """How the engine ranks complete trials (``search.pick_best``): objective, then the plain mean, then
    the validation split's own mean (cross-fitting), then the shorter prompt; full ties keep the earlier."""
    plain = rec.get("metric_mean", rec["score"])
    return rec["score"], plain, rec.get("val_mean", plain), -rec.get("prompt_words", 0)


def _val_of(rec):
    """A trial's plain mean on the validation split: ``val_mean`` when it was also scored on cross-fitted
    training examples, ``metric_mean`` under a weighted objective, else its score."""
    return rec.get("val_mean", rec.get("metric_mean", rec["score"]))
