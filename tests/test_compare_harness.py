"""The comparison harness's bookkeeping (experiments/compare.py, its tables in experiments/compare_tables.py):
the call trajectory of a run directory, when it reaches MIPROv2 light's validation score, and the per-method
table over seeds. The harness's rows themselves come from real runs (experiments/results/compare/); the
runner that writes them is tested in tests/test_experiments_runner.py."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_harness", ROOT / "experiments/compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_trajectory_counts_setup_calls_and_only_complete_trials(compare, tmp_path):
    recs = [{"slot": 1, "trial": 1, "state": "pruned", "score": 0.9, "lm_calls": 16},
            {"slot": 0, "trial": 0, "state": "complete", "score": 0.8, "lm_calls": 100},
            {"slot": 2, "trial": 2, "state": "complete", "score": 0.85, "lm_calls": 100},
            {"slot": 3, "trial": 3, "state": "complete", "score": 0.7, "lm_calls": 100}]
    (tmp_path / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    summary = {"phases": {"proposer": {"calls": 4}, "bootstrap": {"calls": 48}, "search": {"calls": 316}}}
    traj = compare.trajectory(tmp_path, summary)
    # slot order; a pruned trial's partial mean never counts as reached
    assert traj == [[152, 0.8], [168, 0.8], [268, 0.85], [368, 0.85]]
    assert compare.calls_to_reach(traj, 0.85) == 268
    assert compare.calls_to_reach(traj, 0.8) == 152
    assert compare.calls_to_reach(traj, 0.86) is None
    # a row's val is rounded to 4 decimals, a trajectory's to 6: 37/60 reaches 37/60
    assert compare.calls_to_reach([[100, 0.616667]], round(37 / 60, 4)) == 100
    assert compare.calls_to_reach([[100, 0.616617]], 0.6167) is None


def test_trajectory_of_a_balanced_run_follows_the_incumbent_plain_mean(compare, tmp_path):
    # the objective picks the incumbent; its plain validation mean is what is compared with other methods
    recs = [{"slot": 0, "trial": 0, "state": "complete", "score": 0.5, "metric_mean": 0.7, "lm_calls": 60},
            {"slot": 1, "trial": 1, "state": "complete", "score": 0.6, "metric_mean": 0.55, "lm_calls": 60},
            {"slot": 2, "trial": 2, "state": "complete", "score": 0.55, "metric_mean": 0.9, "lm_calls": 60}]
    (tmp_path / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    traj = compare.trajectory(tmp_path, {"phases": {"search": {"calls": 180}}})
    assert traj == [[60, 0.7], [120, 0.55], [180, 0.55]]
    assert compare.calls_to_reach(traj, 0.7) == 60 and compare.calls_to_reach(traj, 0.9) is None


def test_trajectory_breaks_a_cross_fitted_tie_as_the_engine_does(compare, tmp_path):
    # equal objective: the higher validation split mean wins (trial 1 over the shorter trial 0)
    recs = [{"slot": 0, "trial": 0, "state": "complete", "score": 0.03, "val_mean": 0.0, "prompt_words": 300,
             "lm_calls": 100},
            {"slot": 1, "trial": 1, "state": "complete", "score": 0.03, "val_mean": 0.025, "prompt_words": 900,
             "lm_calls": 100},
            {"slot": 2, "trial": 2, "state": "complete", "score": 0.03, "val_mean": 0.025, "prompt_words": 800,
             "lm_calls": 100}]
    (tmp_path / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    traj = compare.trajectory(tmp_path, {"phases": {"search": {"calls": 300}}})
    assert traj == [[100, 0.0], [200, 0.025], [300, 0.025]]
    assert compare.calls_to_reach(traj, 0.025) == 200


def test_table_means_over_seeds_and_reach_fractions_per_seed(compare):
    rows = []
    for seed, (mip_val, mip_test, ours_test) in enumerate([(0.8, 0.70, 0.75), (0.9, 0.72, 0.80)]):
        rows.append({"task": "t", "seed": seed, "method": "mipro_light", "test": mip_test, "test_ci": [0.6, 0.8],
                     "val": mip_val, "task_lm_calls": 400, "proposer_calls": 0, "prompt_words": 50, "seconds": 10.0})
        rows.append({"task": "t", "seed": seed, "method": "ours@small-model", "test": ours_test,
                     "test_ci": [0.7, 0.9], "val": 0.85, "task_lm_calls": 400, "proposer_calls": 4,
                     "prompt_words": 40, "seconds": 20.0, "trajectory": [[100, 0.5], [200, 0.85], [400, 0.85]]})
    table = {r["method"]: r for r in compare.aggregate(rows)}
    ours, mip = table["ours@small-model"], table["mipro_light"]
    assert ours["seeds"] == 2 and ours["test_mean"] == pytest.approx(0.775)
    assert mip["test_mean"] == pytest.approx(0.71) and mip["val_mean"] == pytest.approx(0.85)
    # seed 0: MIPRO's 0.8 reached after 200 of its 400 calls; seed 1: its 0.9 never
    assert ours["calls_to_mipro_light_val"] == [0.5, None]
    lo, hi = ours["test_ci"]
    assert 0.75 <= lo <= ours["test_mean"] <= hi <= 0.80  # an interval over the seeds' means
    md = compare.markdown(compare.aggregate(rows))
    assert "| t | ours@small-model | 2 | 0.775 |" in md and "0.50, never" in md


def test_verdict_uses_the_seed_prompts_per_example_interval(compare):
    rows = []
    for seed in (0, 1):
        rows.append({"task": "t", "seed": seed, "method": "seed", "test": 0.5, "test_ci": [0.4, 0.6],
                     "task_lm_calls": 0, "proposer_calls": 0, "prompt_words": 5, "seconds": 0.0})
        for method, test in (("mipro_light", 0.55), ("ours@small-model", 0.58 + 0.04 * seed)):
            rows.append({"task": "t", "seed": seed, "method": method, "test": test, "test_ci": [test - .1, test + .1],
                         "task_lm_calls": 400, "proposer_calls": 0, "prompt_words": 9, "seconds": 1.0, "val": 0.5})
    table = compare.aggregate(rows)
    seed_row = next(r for r in table if r["method"] == "seed")
    assert seed_row["test_ci"] == [0.5, 0.5] and seed_row["test_ci_examples"] == [0.4, 0.6]
    text = compare.verdict(table)
    # ours' mean 0.60 is not above the seed prompt's 0.6: no method clears its interval
    assert "| t | 2 | — | 0.500 [0.400, 0.600] | 0.550 | 0.600 | +0.050 | no |" in text
    rows[-1]["test"] = 0.70
    assert "| +0.090 | yes |" in compare.verdict(compare.aggregate(rows))
    assert "| mipro_light | 1 | 0.550 |" in text


def test_majority_row_is_the_training_label_prior_scored_by_the_task_metric(compare):
    """The label-prior floor on real data: BBH navigate's training split says "No" most often, and
    always answering "No" scores the test split's share of "No" (no LM involved)."""
    from optimizer.data import make_splits
    from optimizer.task import load_task

    task = load_task(ROOT / "tasks/bbh_navigate/task.yaml")
    task.splits.train.limit, task.splits.validation.limit, task.splits.test.limit = 75, 60, 100
    splits = make_splits(task)
    row = compare.majority_row(task, 0, splits)
    share = lambda exs, label: sum(e.output == label for e in exs) / len(exs)  # noqa: E731
    top = max(("Yes", "No"), key=lambda label: share(splits.train, label))
    assert row["instruction"] == f"(no prompt: always {top!r})"
    assert row["test"] == pytest.approx(share(splits.test, top), abs=1e-4)
    assert row["val"] == pytest.approx(share(splits.validation, top), abs=1e-4)
    assert row["task_lm_calls"] == 0 and row["test_ci"][0] < row["test"] < row["test_ci"][1]
    table = compare.aggregate([row, *({**row, "method": m, "test": t} for m, t in
                                      (("seed", 0.3), ("mipro_light", 0.5), ("ours@small-model", 0.6)))])
    assert f"| bbh_navigate | 1 | {row['test']:.3f} | 0.300 [" in compare.verdict(table)


def test_ours_at_preset_finds_user_and_ablation_presets(compare):
    assert compare.preset_path("small-model") == ROOT / "configs/optimizer/small-model.yaml"
    assert compare.preset_path("small-model-halving") == ROOT / "experiments/presets/small-model-halving.yaml"
    with pytest.raises(SystemExit, match="unknown preset 'no-such'"):
        compare.preset_path("no-such")


def test_the_programs_suite_runs_mipro_light_and_ours_on_a_program_of_steps(compare, tmp_path, monkeypatch):
    """The `programs` suite's harness path on a scripted two-step solver (tests/test_steps.py): MIPROv2 light
    compiles the two-module DSPy program, ours searches the same task within MIPROv2 light's task-LM calls, and
    both rows name each step's instruction and count each step's demos."""
    import types

    from test_steps import ProgramBackend, program_task

    from optimizer.data import make_splits

    task = program_task(tmp_path)
    splits = make_splits(task)
    monkeypatch.setattr(compare, "create_backend", lambda profile, cache=None: ProgramBackend())
    args = types.SimpleNamespace(out=str(tmp_path), lm=None, reflection_lm=None, ours_trials=None)
    profile = ProgramBackend().profile
    seed = compare.run_method("seed", task, 0, splits, profile, None, None, args)
    mipro = compare.run_method("mipro_light", task, 0, splits, profile, None, None, args)
    ours = compare.run_method("ours", task, 0, splits, profile, None, mipro["task_lm_calls"], args)
    assert seed["test"] == 0.0 and seed["task_lm_calls"] == 0  # no demos: the scripted solver adds one too many
    for row in (mipro, ours):
        assert row["instruction"].startswith("solve: ") and " | extract: " in row["instruction"]
        assert set(row["demos"]) == {"solve", "extract"}
        assert row["n_demos"] == sum(len(d) for d in row["demos"].values()) > 0
        assert row["test"] == 1.0  # a demo on each step is all the scripted solver needs
    assert 0 < ours["task_lm_calls"] <= mipro["task_lm_calls"]
