"""`optimize bench`: the real model on a small SST-2 run (seed, winner, weak), plus the bookkeeping
(resume, repeats, cost, candidate files) with the scripted backend."""

import csv
import io
import json

import pytest
import yaml

from conftest import ROOT, run_cli, sst2_task
from conftest_runs import WEAK_SST2
from fakes import ScriptedBackend
from optimizer.bench import BenchOptions, load_candidates, renderer, run_bench
from optimizer.data import make_splits
from optimizer.engine import RunOptions, optimize
from optimizer.errors import ConfigError
from optimizer.lm.profiles import Prices
from optimizer.stats import mcnemar


def test_bench_ranks_seed_winner_and_weak_prompt_on_the_real_model(sst2_run, tmp_path):
    weak = WEAK_SST2
    out = tmp_path / "bench"
    args = ["bench", str(sst2_run.task), "--candidates", f"seed={sst2_run.run}#baseline", f"winner={sst2_run.run}",
            str(weak), "--limit", "30", "--timing-calls", "2", "--out", str(out), "--cache-dir", str(sst2_run.cache),
            "--format", "markdown"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((out / "bench.json").read_text())
    by = {c["name"]: c for c in doc["candidates"]}
    assert list(by) == ["seed", "winner", "weak"]
    # ranked correctly: the winner first, the deliberately weak prompt last
    assert by["winner"]["rank"] == 1 and by["weak"]["rank"] == 3 and by["seed"]["rank"] == 2, \
        {n: c["mean"] for n, c in by.items()}
    assert by["winner"]["mean"] > by["seed"]["mean"] > by["weak"]["mean"]
    # intervals and paired p-values against the first candidate (exact McNemar: scores are 0/1)
    for c in doc["candidates"]:
        assert c["ci"][0] <= c["mean"] <= c["ci"][1]
        assert len(c["per_example"]) == 30 and set(c["per_example"].values()) <= {0.0, 1.0}
        assert c["prompt_tokens_per_call"] > 0 and c["latency_s_per_call"] > 0 and c["latency_calls"] >= 2
        assert c["cost_per_1000_calls"] is None  # the local profile has no prices
    assert doc["p_value_test"] == "mcnemar_exact"
    assert by["seed"]["vs_reference"] is None
    assert by["winner"]["vs_reference"]["diff"] > 0 and by["winner"]["vs_reference"]["p_value"] < 0.05
    assert by["weak"]["vs_reference"]["diff"] < 0
    assert by["winner"]["n_demos"] > 0 and by["seed"]["n_demos"] == 0
    # the same examples for everyone (paired)
    assert len({tuple(c["per_example"]) for c in doc["candidates"]}) == 1
    # the printed Markdown table and the files
    assert r.stdout.splitlines()[0].startswith("| rank | candidate |")
    assert "winner" in r.stdout and "McNemar" in r.stdout
    rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert [row["candidate"] for row in rows] == ["seed", "winner", "weak"]
    assert (out / "table.md").read_text().startswith("| rank |")
    # the same command again: resumed from the bench directory, no LM call at all
    r2 = run_cli(*args)
    assert r2.returncode == 0, r2.stderr[-2000:]
    doc2 = json.loads((out / "bench.json").read_text())
    assert doc2["resumed_calls"] == 90 and doc2["usage"]["calls"] == 0
    assert [c["mean"] for c in doc2["candidates"]] == [c["mean"] for c in doc["candidates"]]


def test_mcnemar_exact():
    r = mcnemar([1, 1, 1, 1, 1, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0, 0, 0, 1, 0])
    assert (r["a_only"], r["b_only"]) == (7, 0)
    assert r["p_value"] == pytest.approx(2 * 0.5 ** 7)
    assert mcnemar([1, 0], [1, 0])["p_value"] == 1.0
    with pytest.raises(ValueError):
        mcnemar([0.5], [1.0])


# ---------------------------------------------------------------------------- scripted backend

def scripted(task, **profile):
    s = make_splits(task)
    b = ScriptedBackend({e.inputs["sentence"]: e.output for e in s.train + s.validation + s.test})
    if profile:
        b.profile = b.profile.model_copy(update=profile)
    return b


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    task = sst2_task(trials=6, bootstrap_examples=16)
    out = tmp_path_factory.mktemp("fake") / "run"
    optimize(task, RunOptions(out=out, backend=scripted(task), seed=1))
    return task, out


def candidates_file(path):
    path.write_text(yaml.safe_dump({"candidates": [
        {"name": "two-demos", "instruction": "Label the review.",
         "demos": [{"sentence": "a fine film .", "sentiment": "positive"}, "train:3"]},
        {"name": "bare", "instruction": "Label the review."}]}))
    return path


def test_bench_resumes_after_an_interruption(fake_run, tmp_path):
    task, run = fake_run
    specs = [f"{run}#baseline", str(run), str(candidates_file(tmp_path / "c.yaml"))]
    opts = BenchOptions(limit=10, out=tmp_path / "bench", timing_calls=0)

    def stop_after_15(kind, **data):
        if kind == "result" and data["done"] == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_bench(task, specs, BenchOptions(**{**opts.__dict__, "backend": scripted(task)}), on_event=stop_after_15)
    assert json.loads((tmp_path / "bench" / "status.json").read_text())["status"] == "failed"
    assert len((tmp_path / "bench" / "results.jsonl").read_text().splitlines()) == 15
    backend = scripted(task)
    res = run_bench(task, specs, BenchOptions(**{**opts.__dict__, "backend": backend}))
    assert res.doc["resumed_calls"] == 15
    assert backend.usage.calls == 4 * 10 - 15  # only what was missing
    names = [c["name"] for c in res.doc["candidates"]]
    assert names == [f"{run.name}#baseline", run.name, "two-demos", "bare"]
    assert res.doc["candidates"][2]["n_demos"] == 2
    assert res.doc["candidates"][2]["demo_ids"][1] == "train:3"
    # the scripted model answers better with more demos: the winner ranks first
    assert res.doc["candidates"][1]["rank"] == 1
    # a different bench in the same directory is refused
    with pytest.raises(ConfigError, match="different bench"):
        run_bench(task, specs[:2], BenchOptions(**{**opts.__dict__, "backend": scripted(task)}))


def test_repeats_under_sampled_decoding_and_cost(fake_run, tmp_path):
    task, run = fake_run
    backend = scripted(task, temperature=0.7, prices=Prices(prompt_per_1k=0.5, completion_per_1k=2.0))
    res = run_bench(task, [f"{run}#baseline", str(run)],
                    BenchOptions(limit=6, repeats=3, out=tmp_path / "b", backend=backend, timing_calls=0))
    doc = res.doc
    assert doc["repeats"] == 3 and backend.usage.calls == 2 * 6 * 3  # distinct draws: distinct cache keys
    assert doc["p_value_test"] == "paired_bootstrap"
    c = doc["candidates"][1]
    assert c["cost_per_1000_calls"] == pytest.approx(c["prompt_tokens_per_call"] * 0.5
                                                     + c["completion_tokens_per_call"] * 2.0, rel=1e-3)
    lines = [json.loads(x) for x in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert sorted({x["repeat"] for x in lines}) == [0, 1, 2]
    # greedy decoding: repeats collapse to one, with a note
    res2 = run_bench(task, [str(run)], BenchOptions(limit=3, repeats=4, out=tmp_path / "c", backend=scripted(task),
                                                    timing_calls=0))
    assert res2.doc["repeats"] == 1 and "temperature 0" in res2.notes[0]


def test_candidate_specs_and_errors(fake_run, tmp_path):
    task, run = fake_run
    ev = renderer(task, scripted(task).profile)
    (tmp_path / "one.json").write_text(json.dumps({"instruction": "Just one."}))
    got = load_candidates([f"mine={tmp_path / 'one.json'}", str(run)], task, ev)
    assert [g.name for g in got] == ["mine", run.name] and got[0].candidate.instruction == "Just one."
    assert ev.prompt_text(got[1].candidate) == (run / "prompt.txt").read_text().rstrip("\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("candidates:\n  - {name: x, instructions: typo}\n")
    with pytest.raises(ConfigError, match="instruction"):
        load_candidates([str(bad)], task, ev)
    bad.write_text("candidates:\n  - {name: x, instruction: ok, demos: [train:999999]}\n")
    with pytest.raises(ConfigError, match="unknown example id"):
        load_candidates([str(bad)], task, ev)
    with pytest.raises(ConfigError, match="not found"):
        load_candidates([str(tmp_path / "missing.yaml")], task, ev)
    r = run_cli("bench", str(ROOT / "tasks/sst2/task.yaml"), "--candidates", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "missing.yaml" in r.stderr


def test_the_caption_says_a_programs_figures_are_per_answer():
    from optimizer.bench._table import caption

    doc = {"task": "t", "split": "test", "examples": 2, "repeats": 1, "metric": "numeric", "p_value_test":
           "paired_bootstrap", "lm": {"name": "local", "model": "m"}, "reference": "seed", "prices": None,
           "candidates": [{"name": "seed", "steps": [{"name": "solve"}, {"name": "extract"}]}]}
    assert "per answer, summed over its steps" in caption(doc)
    doc["candidates"] = [{"name": "seed"}]
    assert "per answer" not in caption(doc)
