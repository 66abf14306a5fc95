"""Programs of several steps (``steps:`` in task.yaml): the step graph's checks, a program scored step by step,
bootstrapped demos of every step, a whole search, its run directory read back, a resumed run and the yaml
export run by the plain client. On a scripted LM; the same on the real model is in
``test_steps_real_model.py``."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import run_cli
from optimizer.artifacts import build_artifact, serialize
from optimizer.data import make_splits
from optimizer.engine import RunOptions, optimize
from optimizer.errors import ConfigError, DataError
from optimizer.lm.base import LMBackend, LMRequest, LMResponse
from optimizer.lm.profiles import LMProfile
from optimizer.metrics import build_metric
from optimizer.plain_client import run_program
from optimizer.program import Candidate
from optimizer.runread import FinishedRun
from optimizer.steps import ProgramEvaluator, bootstrap_traces, keep_threshold, step_pool
from optimizer.task import load_task, task_from_dict

PROBLEMS = [(a, b) for a in range(2, 9) for b in range(3, 7)]  # 28 distinct sums


class ProgramBackend(LMBackend):
    """A scripted two-step solver. The solving step (prompt ends in ``Solution:``) writes ``a + b = c`` with
    the right sum when its prompt shows at least one demo, else a wrong one, then ``Total: c`` or ``Answer: c``
    where its demos show that field; the extracting step (prompt ends
    in ``Answer:``) gives the number after ``=`` in the solution it was shown when it has a demo, else
    ``none``."""

    name = "scripted-program"

    def __init__(self, cache=None, interrupt_after: int | None = None):
        super().__init__(LMProfile(name="scripted-program", backend="local", model="scripted-program"), cache)
        self.prompts: list[str] = []
        self.interrupt_after = interrupt_after  # raise KeyboardInterrupt on the call after this many (Ctrl-C)

    @property
    def model_id(self) -> str:
        return "scripted-program"

    def _generate(self, request: LMRequest) -> LMResponse:
        prompt = request.prompt or ""
        if self.interrupt_after is not None and len(self.prompts) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.prompts.append(prompt)
        last = prompt.rsplit("Question:", 1)[-1]
        if prompt.rstrip().endswith("Solution:"):
            a, b = map(int, re.search(r"(\d+) plus (\d+)", last).groups())
            demos = prompt.count("Solution:") - 1
            c = a + b if demos else a + b + 1
            then = next((f"{p}: {c}\n" for p in ("Total", "Answer") if f"{p}:" in prompt), "")
            text = f" {a} + {b} = {c}\n{then}"
        else:
            demos = prompt.count("Answer:") - 1
            m = re.search(r"(?:=|Total:)\s*(-?\d+)", last)
            text = f" {m.group(1) if m and demos else 'none'}\n"
        return LMResponse(text=text, prompt_tokens=len(prompt.split()), completion_tokens=3)


def program_data(tmp_path, *, solution_column=True):
    rows = [{"question": f"What is {a} plus {b}?", "answer": f"{a} + {b} = {a + b}\n#### {a + b}"}
            for a, b in PROBLEMS]
    (tmp_path / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    solve_out = {"name": "solution", "prefix": "Solution", "format": "text"}
    if solution_column:
        solve_out.update(column="answer", pattern=r"^(?P<value>.*?)\n####")
    return {"task": "sums", "dataset": {"format": "jsonl", "files": {"train": "sums.jsonl"}},
            "splits": {"train": {"from": "train", "limit": 12}, "validation": {"from": "train", "limit": 8},
                       "test": {"from": "train", "limit": 8}},
            "inputs": [{"name": "question", "prefix": "Question"}],
            "output": {"name": "answer", "prefix": "Answer", "column": "answer",
                       "pattern": r"####\s*(?P<value>-?\d+)\s*$"},
            "steps": [{"name": "solve", "instruction": "Solve it.", "inputs": ["question"], "output": solve_out,
                       "max_tokens": 24},
                      {"name": "extract", "instruction": "Give the number.", "inputs": ["question", "solution"],
                       "max_tokens": 4}],
            "metric": "numeric",
            "optimizer": {"trials": 5, "max_demos": 2, "demo_sets": 2, "instructions": 2, "proposers": ["offline"],
                          "bootstrap_examples": 6, "crossfit": 4}}


def program_task(tmp_path, **kw):
    return task_from_dict(program_data(tmp_path, **kw), base_dir=tmp_path)


# ------------------------------------------------------------------------------------------ the step graph

def _error(tmp_path, edit):
    data = program_data(tmp_path)
    edit(data)
    with pytest.raises(ConfigError) as exc:
        task_from_dict(data, base_dir=tmp_path)
    return exc.value


def test_a_step_reading_a_field_nobody_writes_names_the_step_and_field(tmp_path):
    err = _error(tmp_path, lambda d: d["steps"][1].update(inputs=["question", "soluton"]))
    assert err.field == "steps.1.inputs" and "`extract` reads `soluton`" in err.message
    assert "solution" in err.fix


def test_a_cycle_between_steps_is_named(tmp_path):
    def cycle(d):
        d["steps"][0]["inputs"] = ["question", "answer"]  # solve reads extract's output, extract reads solve's
    err = _error(tmp_path, cycle)
    assert "cycle" in err.message and err.field.startswith("steps.") and err.field.endswith(".inputs")
    assert "`solve`" in err.message and "`extract`" in err.message


def test_other_graph_errors(tmp_path):
    err = _error(tmp_path, lambda d: d["steps"][1].update(output={"name": "solution"}))
    assert err.field == "steps.1.output.name" and "already" in err.message
    err = _error(tmp_path, lambda d: d["steps"][1].update(output={"name": "number"}))
    assert err.field == "steps" and "`answer`" in err.message
    err = _error(tmp_path, lambda d: d.update(program="chain_of_thought"))
    assert "steps" in err.message


def test_steps_run_in_dependency_order(tmp_path):
    data = program_data(tmp_path)
    data["steps"].reverse()  # extract listed first: it still runs after solve
    task = task_from_dict(data, base_dir=tmp_path)
    assert [task.steps[i].name for i in task.step_order()] == ["solve", "extract"]


def test_cli_names_the_step_and_field_with_exit_2(tmp_path):
    data = program_data(tmp_path)
    data["steps"][1]["inputs"] = ["question", "reasoning"]
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(data))
    r = run_cli("validate", str(path))
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "steps.1.inputs" in lines[0] and "`reasoning`" in lines[0]
    assert "Traceback" not in r.stderr


def test_a_missing_intermediate_column_is_a_data_error(tmp_path):
    data = program_data(tmp_path)
    data["steps"][0]["output"]["column"] = "worked"
    task = task_from_dict(data, base_dir=tmp_path)
    with pytest.raises(DataError) as exc:
        make_splits(task)
    assert exc.value.field == "steps.0.output.column"


# ------------------------------------------------------------------------------------------ scoring

def test_a_program_is_scored_step_by_step(tmp_path):
    task = program_task(tmp_path)
    splits = make_splits(task)
    assert splits.train[0].extras["solution"].endswith(f"= {splits.train[0].output}")
    backend = ProgramBackend()
    ev = ProgramEvaluator(task, backend, build_metric(task))
    ex = splits.validation[0]
    seed = ev.seed()
    out = ev.run_one(seed, ex)
    assert len(backend.prompts) == 2 and out.score == 0.0 and out.prediction["answer"] == "none"
    assert out.prediction["solution"] in backend.prompts[1]  # the second step reads what the first wrote
    # with a demo in each step: the right sum, read off the solution
    demos = [tuple(step_pool(task, i, splits.train, [])[:1]) for i in range(2)]
    prog = ev.program([Candidate("Solve it.", demos[0]), Candidate("Give the number.", demos[1])])
    out = ev.run_one(prog, ex)
    assert out.score == 1.0 and out.prediction["answer"] == ex.output and out.parsed
    assert ev.run_one(prog, ex) is out and len(backend.prompts) == 4  # memoised
    # a training example is never its own demo, in any step
    own = demos[0][0]
    ev.run_one(prog, next(e for e in splits.train if e.id == own.id))
    assert all(own.inputs["question"] not in p.split("Question:")[-2] for p in backend.prompts[-2:]
               if p.count("Question:") > 1)
    with pytest.raises(ConfigError):
        ev.check_scoring("likelihood")
    assert "## step solve" in ev.prompt_text(prog) and "{{solution}}" in ev.prompt_text(prog)


def test_bootstrap_keeps_traces_that_scored_well(tmp_path):
    assert keep_threshold([0.0, 1.0, 0.0]) == pytest.approx(1.0)
    assert keep_threshold([0.2, 0.6, 0.0, 0.4]) == pytest.approx(0.4)
    assert keep_threshold([0.0, 0.0]) == float("inf")
    # without the data's solutions the teacher shows the extract step no demos: nothing scores, nothing kept
    task = program_task(tmp_path, solution_column=False)
    ev = ProgramEvaluator(task, ProgramBackend(), build_metric(task))
    kept, notes = bootstrap_traces(ev, make_splits(task).train, 0, 6, 2)
    assert kept == [] and notes["kept"] == 0 and notes["teacher_demos"] == {"solve": 0, "extract": 0}
    # with them: every trace is right, and gives examples of both steps
    task = program_task(tmp_path)
    splits = make_splits(task)
    ev = ProgramEvaluator(task, ProgramBackend(), build_metric(task))
    kept, notes = bootstrap_traces(ev, splits.train, 0, 6, 2)
    assert notes["ran"] == 6 and len(kept) == 6 and notes["teacher_demos"] == {"solve": 2, "extract": 2}
    pool = step_pool(task, 1, splits.train, kept)
    assert len(pool) == len(splits.train) and set(pool[0].inputs) == {"question", "solution"}


# ------------------------------------------------------------------------------------------ the search

def test_a_program_search_end_to_end(tmp_path):
    task = program_task(tmp_path)
    opts = RunOptions(out=tmp_path / "run", backend=ProgramBackend())
    res = optimize(task, opts)
    s = res.summary
    assert s["program"] == "steps" and [st["name"] for st in s["best"]["steps"]] == ["solve", "extract"]
    assert s["best"]["test"] == 1.0 and s["baseline"]["test"] == 0.0
    assert s["phases"]["bootstrap"]["calls"] == 12  # 6 examples x 2 steps
    cands = json.loads((tmp_path / "run" / "candidates.json").read_text())
    assert [st["name"] for st in cands["steps"]] == ["solve", "extract"]
    assert cands["bootstrap_notes"]["kept"] == 6
    state = json.loads((tmp_path / "run" / "best_program.json").read_text())
    assert {"solve", "extract"} <= set(state)
    # the run read back: the same program
    run = FinishedRun.open(tmp_path / "run")
    again = run.candidate("best")
    assert again.key == res.best.key
    # the same command again: resumed, the same result, no new call
    backend = ProgramBackend()
    res2 = optimize(task, RunOptions(out=tmp_path / "run", backend=backend))
    assert res2.summary["best"]["test"] == s["best"]["test"] and res2.best.key == res.best.key
    # the yaml export, run by the plain client on the same scripted LM, renders the optimizer's prompts
    art = yaml.safe_load(serialize(build_artifact(run, "yaml"), "yaml"))
    assert [st["name"] for st in art["steps"]] == ["solve", "extract"]
    ev = ProgramEvaluator(task, ProgramBackend(), build_metric(task))
    splits = make_splits(task)
    client = ProgramBackend()

    def call(prompt, parameters):
        return client.complete(LMRequest(prompt=prompt, max_tokens=parameters["max_tokens"])).text, None
    for ex in splits.test[:3]:
        got = run_program(art, ex.inputs, call)
        assert got["parsed"]["answer"] == ex.output
        want = ev.run_one(res.best, ex)
        assert got["parsed"] == want.prediction
        for i, st in zip(ev.order, got["steps"]):
            assert st["prompt"] == st["parts_prompt"] == ev.step_request(res.best, i, {**ex.inputs, **got["parsed"]}).prompt
    for fmt in ("completion", "openai-chat", "dspy"):
        with pytest.raises(ConfigError) as exc:
            build_artifact(run, fmt)
        assert "yaml" in exc.value.fix


def test_the_shipped_program_task_loads():
    task = load_task("tasks/gsm8k_program/task.yaml")
    splits = make_splits(task)
    assert [task.steps[i].name for i in task.step_order()] == ["solve", "extract"]
    assert all(e.extras.get("solution") for e in splits.train)
    assert "####" not in splits.train[0].extras["solution"]


def test_the_dry_run_counts_a_call_per_step(tmp_path):
    from optimizer.run.plan import plan

    task = program_task(tmp_path)
    p = plan(task, RunOptions(out=tmp_path / "run", backend=ProgramBackend()))
    splits = make_splits(task)
    scored = len(splits.validation) + task.optimizer.crossfit
    assert p["phases"]["search"]["calls"] == task.optimizer.trials * scored * 2
    assert p["phases"]["bootstrap"]["calls"] == task.optimizer.bootstrap_examples * 2
    assert p["phases"]["search"]["completion_tokens"] == task.optimizer.trials * scored * (24 + 4)


def test_a_program_space_reads_back_from_its_description(tmp_path):
    """What another worker, or a resumed process, reads from the study: the same candidates."""
    from optimizer.search.space import space_from_description

    task = program_task(tmp_path)
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=ProgramBackend()))
    cands = json.loads((tmp_path / "run" / "candidates.json").read_text())
    described = {k: v for k, v in cands.items() if k in ("steps", "scorings")}
    space = space_from_description(json.loads(json.dumps(described)), [])
    assert space.names == ["solve", "extract"]
    trials = [json.loads(line) for line in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    best = next(t for t in trials if t["trial"] == res.summary["best"]["trial"])
    assert space.of_params(best["params"]).key == res.best.key
    assert space.fixed_params(0) == trials[0]["params"] and space.seed_params() == trials[1]["params"]


class ChatProgramBackend(ProgramBackend):
    """The same solver behind a chat endpoint: reads the last user message, answers under the chat adapter's
    field header (the solution step) or plainly (the extracting step: a chat model's plain answer)."""

    def _generate(self, request: LMRequest) -> LMResponse:
        messages = request.messages or ()
        user = messages[-1][1]
        self.prompts.append(user)
        demos = sum(1 for role, _ in messages if role == "assistant")
        if re.search(r"\[\[ ## solution ## \]\]\n", user):  # the extract step is shown a solution
            m = re.search(r"=\s*(-?\d+)", user.split("[[ ## solution ## ]]")[-1])
            return LMResponse(text=m.group(1) if m and demos else "none", prompt_tokens=len(user.split()),
                              completion_tokens=2)
        a, b = map(int, re.search(r"(\d+) plus (\d+)", user).groups())
        text = f"[[ ## solution ## ]]\n{a} + {b} = {a + b if demos else a + b + 1}\n\n[[ ## completed ## ]]"
        return LMResponse(text=text, prompt_tokens=len(user.split()), completion_tokens=8)


def test_a_program_runs_through_the_chat_adapter(tmp_path):
    task = program_task(tmp_path)
    splits = make_splits(task)
    backend = ChatProgramBackend()
    ev = ProgramEvaluator(task, backend, build_metric(task), adapter="chat")
    demos = [tuple(step_pool(task, i, splits.train, [])[:1]) for i in range(2)]
    prog = ev.program([Candidate("Solve it.", demos[0]), Candidate("Give the number.", demos[1])])
    outs = [ev.run_one(prog, ex) for ex in splits.validation[:4]]
    assert all(o.score == 1.0 and o.parsed for o in outs), [(o.prediction, o.text) for o in outs]
    assert all(o.prediction["solution"].endswith(f"= {ex.output}") for o, ex in zip(outs, splits.validation))
    seed = [ev.run_one(ev.seed(), ex) for ex in splits.validation[:4]]
    assert all(o.score == 0.0 for o in seed)


def test_a_chat_program_exports_each_steps_messages_and_the_plain_client_sends_them(tmp_path):
    data = program_data(tmp_path)
    data["adapter"] = "chat"
    task = task_from_dict(data, base_dir=tmp_path)
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=ChatProgramBackend()))
    assert res.summary["adapter"] == "chat" and res.summary["best"]["test"] == 1.0
    run = FinishedRun.open(tmp_path / "run")
    art = yaml.safe_load(serialize(build_artifact(run, "yaml"), "yaml"))
    assert art["api"] == "chat" and [st["name"] for st in art["steps"]] == ["solve", "extract"]
    assert all(st["api"] == "chat" and st["messages"] and "template" not in st for st in art["steps"])
    assert art["output_parsing"]["rule"] == "chat-fields"
    client = ChatProgramBackend()

    def call(messages, parameters):  # a chat step: the client sends its messages
        assert isinstance(messages, list)
        request = LMRequest(messages=tuple((m["role"], m["content"]) for m in messages),
                            max_tokens=parameters["max_tokens"])
        return client.complete(request).text, None
    ev = ProgramEvaluator(task, ChatProgramBackend(), build_metric(task), adapter="chat")
    for ex in make_splits(task).test[:3]:
        got = run_program(art, ex.inputs, call)
        assert got["parsed"] == ev.run_one(res.best, ex).prediction and got["parsed"]["answer"] == ex.output
        for i, st in zip(ev.order, got["steps"]):
            want = ev.step_request(res.best, i, {**ex.inputs, **got["parsed"]})
            assert st["messages"] == [{"role": r, "content": c} for r, c in want.messages]


def test_a_step_may_write_several_fields(tmp_path):
    data = program_data(tmp_path)
    solve = data["steps"][0]
    solve["output"] = [solve["output"], {"name": "total", "prefix": "Total", "column": "answer",
                                         "pattern": r"####\s*(?P<value>-?\d+)\s*$"}]
    data["steps"][1]["inputs"] = ["question", "total"]
    task = task_from_dict(data, base_dir=tmp_path)
    splits = make_splits(task)
    assert set(splits.train[0].extras) == {"solution", "total"}
    pool = step_pool(task, 0, splits.train, [])
    by_id = {e.id: e for e in splits.train}
    assert set(pool[0].extras) == {"solution"} and pool[0].output == by_id[pool[0].id].extras["total"]
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=ProgramBackend()))
    assert res.summary["best"]["test"] == 1.0
    preds = [json.loads(line) for line in (tmp_path / "run" / "test_predictions.jsonl").read_text().splitlines()]
    assert all(set(p["best"]["prediction"]) == {"solution", "total", "answer"} for p in preds)
    assert all(p["best"]["prediction"]["total"] == p["expected"] for p in preds)
    run = FinishedRun.open(tmp_path / "run")
    assert run.candidate("best").key == res.best.key
    art = yaml.safe_load(serialize(build_artifact(run, "yaml"), "yaml"))
    assert [f["name"] for f in art["steps"][0]["outputs"]] == ["solution", "total"]
    assert art["steps"][0]["output_parsing"]["rule"] == "prefixed-fields"
    client = ProgramBackend()

    def call(prompt, parameters):
        return client.complete(LMRequest(prompt=prompt, max_tokens=parameters["max_tokens"])).text, None
    ex = splits.test[0]
    assert run_program(art, ex.inputs, call)["parsed"] == ProgramEvaluator(
        task, ProgramBackend(), build_metric(task)).run_one(res.best, ex).prediction
    # the task's output may only be the last field of a step
    data["steps"][1]["output"] = [{"name": "answer"}, {"name": "check"}]
    with pytest.raises(ConfigError) as exc:
        task_from_dict(data, base_dir=tmp_path)
    assert exc.value.field == "steps.1.output.0.name" and "last" in exc.value.fix


def test_a_one_call_task_may_write_several_fields(tmp_path):
    """``output:`` as a list: one call writes the fields in order and the last is scored; it runs as a
    program of one step reading every input, with its search, run directory, read-back and yaml export."""
    data = program_data(tmp_path)
    solve = data["steps"][0]["output"]
    data["output"] = [solve, data["output"]]
    data["instruction"] = "Solve it, then give the number."
    del data["steps"]
    task = task_from_dict(data, base_dir=tmp_path)
    assert [st.name for st in task.steps] == ["call"] and task.output.name == "answer"
    assert [f.name for f in task.step_outputs(task.steps[0])] == ["solution", "answer"]
    assert task.steps[0].inputs == ["question"] and task.steps[0].instruction == "Solve it, then give the number."
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=ProgramBackend()))
    s = res.summary
    assert s["best"]["test"] == 1.0 and s["baseline"]["test"] == 0.0
    preds = [json.loads(line) for line in (tmp_path / "run" / "test_predictions.jsonl").read_text().splitlines()]
    assert all(set(p["best"]["prediction"]) == {"solution", "answer"} for p in preds)
    run = FinishedRun.open(tmp_path / "run")
    assert run.candidate("best").key == res.best.key
    art = yaml.safe_load(serialize(build_artifact(run, "yaml"), "yaml"))
    assert [f["name"] for f in art["steps"][0]["outputs"]] == ["solution", "answer"]
    client = ProgramBackend()

    def call(prompt, parameters):
        return client.complete(LMRequest(prompt=prompt, max_tokens=parameters["max_tokens"])).text, None
    ex = make_splits(task).test[0]
    assert run_program(art, ex.inputs, call)["parsed"] == ProgramEvaluator(
        task, ProgramBackend(), build_metric(task)).run_one(res.best, ex).prediction
    # what does not combine with a list of outputs: one line each, naming the fix
    for edit, words in ((lambda d: d.update(program="chain_of_thought"), "reasoning"),
                        (lambda d: d.update(output=d["output"][:1]), "two or more"),
                        (lambda d: d.update(steps=program_data(tmp_path)["steps"]), "steps.N.output")):
        bad = json.loads(json.dumps(data))
        edit(bad)
        with pytest.raises(ConfigError) as exc:
            task_from_dict(bad, base_dir=tmp_path)
        assert words in str(exc.value), str(exc.value)
    bad = json.loads(json.dumps(data))
    bad["output"][0]["column"] = "worked"
    with pytest.raises(DataError) as exc:
        make_splits(task_from_dict(bad, base_dir=tmp_path))
    assert exc.value.field == "output.0.column"  # as the user wrote it


def test_a_word_of_a_long_answer_does_not_put_a_draft_on_topic():
    """The base model's draft for the solving step, accepted before this check because it shares "after" with
    a worked solution, is off topic; an instruction about solving the problem is not."""
    from optimizer.plugins import PROPOSERS
    from optimizer.proposers import ProposalContext

    task = load_task("tasks/gsm8k_program/task.yaml")
    sub, pool = task.step_task(0), step_pool(task, 0, make_splits(task).train, [])
    ctx = ProposalContext(sub, pool, 0)
    lm = PROPOSERS.get("lm")()
    drift = lm.check("Please remember to add a comma and a full stop after the sentence.", ctx, pool[:5])
    assert drift == {"passed": False, "reason": "off topic: shares no content word with the task"}
    assert lm.check("Work out the problem one calculation at a time and state each result.", ctx, pool[:5])["passed"]


def test_an_interrupted_program_run_continues_to_the_uninterrupted_result(tmp_path):
    from optimizer.lm.cache import ResponseCache

    task = program_task(tmp_path)
    whole = optimize(task, RunOptions(out=tmp_path / "whole", backend=ProgramBackend()))
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with pytest.raises(KeyboardInterrupt):  # in the search: after the bootstrap's 12 calls and a few trials
        optimize(task, RunOptions(out=tmp_path / "run", backend=ProgramBackend(cache, interrupt_after=40)))
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "interrupted"
    again = ProgramBackend(cache)
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=again))
    assert res.summary["resumed"] and res.best.key == whole.best.key
    assert res.summary["best"]["test"] == whole.summary["best"]["test"]
    strip = lambda p: [(t["slot"], t["params"], t["score"]) for t in map(json.loads, p.read_text().splitlines())]  # noqa: E731
    assert strip(tmp_path / "run" / "trials.jsonl") == strip(tmp_path / "whole" / "trials.jsonl")
    # over both processes no answered call was paid twice (the spend log holds every paid call's key)
    keys = [json.loads(line)["key"] for line in (tmp_path / "run" / "spend.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)) > 40 and again.usage.cache_hits > 0


def test_a_program_step_retrieves_its_nearest_demos(tmp_path):
    """kNN pools per step: each input gets its k nearest pool examples by that step's own inputs (a field an
    earlier step wrote included), in the search, the run directory read back and the yaml export."""
    data = program_data(tmp_path)
    data["optimizer"].update(selectors=["knn"], demo_sets=1, trials=6)  # the kNN pool is the only demo set
    task = task_from_dict(data, base_dir=tmp_path)
    res = optimize(task, RunOptions(out=tmp_path / "run", backend=ProgramBackend()))
    knn = [st["knn"] for st in res.summary["best"]["steps"]]
    assert any(knn) and res.summary["best"]["test"] == 1.0, res.summary["best"]["steps"]
    pools = json.loads((tmp_path / "run" / "demo_pool.json").read_text())["steps"]
    assert {n for n, k in zip(["solve", "extract"], knn) if k} == set(pools)
    run = FinishedRun.open(tmp_path / "run")
    assert run.candidate("best").key == res.best.key
    art = yaml.safe_load(serialize(build_artifact(run, "yaml"), "yaml"))
    ev = ProgramEvaluator(task, ProgramBackend(), build_metric(task))
    client = ProgramBackend()

    def call(prompt, parameters):
        return client.complete(LMRequest(prompt=prompt, max_tokens=parameters["max_tokens"])).text, None
    for ex in make_splits(task).test[:3]:
        got = run_program(art, ex.inputs, call)
        assert got["parsed"] == ev.run_one(res.best, ex).prediction
        for i, st in zip(ev.order, got["steps"]):
            assert st["prompt"] == ev.step_request(res.best, i, {**ex.inputs, **got["parsed"]}).prompt
