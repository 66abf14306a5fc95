"""The benchmark runner (experiments/run.py, suites.yaml, rows.py, make_tables.py) without an LM: suites
parse, a dry run lists the jobs, rows carry provenance, the newest row of a key supersedes the older
ones, and the tables and the pages' generated blocks come from the rows alone."""

import hashlib
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import make_tables  # noqa: E402
import rows as rowsfile  # noqa: E402
import run  # noqa: E402

KNOWN = ("majority", "seed", "random", "bfrs", "mipro_light", "mipro_medium", "gepa", "ours")


def row(task, seed, method, test, version=None, **extra):
    """A row at the task's current version (``version``: another one)."""
    version = rowsfile.task_version(task) if version is None else version
    r = {"task": task, "seed": seed, "method": method, "test": test, "test_ci": [test - 0.05, test + 0.05],
         "task_lm_calls": 400 if method != "seed" else 0, "proposer_calls": 0, "prompt_words": 10,
         "seconds": 1.0, "val": test, "provenance": {"commit": None, "task_version": version}}
    r.update(extra)
    return r


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_every_suite_parses_and_names_known_methods_and_presets():
    suites = run.load_suites()
    assert {"smoke", "classification", "gsm8k"} <= set(suites)
    for name, suite in suites.items():
        assert suite["tasks"] and suite["seeds"] and suite["methods"], name
        for task in suite["tasks"]:
            assert (ROOT / "tasks" / task / "task.yaml").exists(), (name, task)
        for method in suite["methods"]:
            assert method.split("@")[0] in KNOWN, (name, method)
            if "@" in method:
                assert rowsfile.preset_path(method.split("@", 1)[1]).exists()
        ours = [i for i, m in enumerate(suite["methods"]) if m.startswith("ours@")]
        if "mipro_light" in suite["methods"] and ours:  # ours' budget is MIPROv2 light's calls: it runs first
            assert suite["methods"].index("mipro_light") < min(ours), name
    cls = suites["classification"]
    assert run.sizes_of(cls, "bbh_navigate") == {"train": 200, "val": 60, "test": 100}
    assert run.sizes_of(cls, "gsm8k") == {"train": 100, "val": 40, "test": 100}
    assert run.sizes_of(cls, "sst2") == run.DEFAULT_SIZES
    assert suites["smoke"]["sizes"]["sst2"]["train"] == 20 and suites["smoke"]["timeouts"] == {"gepa": 900}


def test_a_suite_file_without_lists_or_an_unknown_suite_is_refused(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("suites:\n  x: {tasks: [sst2], seeds: [0]}\n")
    with pytest.raises(SystemExit, match="lacks methods"):
        run.load_suites(bad)
    with pytest.raises(SystemExit, match="unknown suite 'nope'"):
        run.get_suite("nope")


def test_dry_run_lists_every_job_and_only_filters(tmp_path, capsys):
    suite = run.get_suite("classification")
    n = len(suite["tasks"]) * len(suite["seeds"]) * len(suite["methods"])
    assert run.main(["--suite", "classification", "--dry-run", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == n + 1 and lines[-1].startswith(f"{n} jobs in suite 'classification', {n} to run")
    assert lines[0].split() == ["sst2:0", "majority", "todo"]
    jobs = [tuple(line.split()[:2]) for line in lines[:-1]]
    assert len(set(jobs)) == n
    run.main(["--suite", "classification", "--dry-run", "--out", str(tmp_path), "--only", "trec:1", "bbh_sports",
              "--method", "seed", "gepa"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [
        ["trec:1", "seed"], ["trec:1", "gepa"], *([f"bbh_sports:{s}", m] for s in (0, 1, 2) for m in ("seed", "gepa"))]


def test_a_job_with_a_row_at_the_current_task_version_is_done(tmp_path, capsys):
    write_rows(tmp_path / "rows.jsonl", [
        row("sst2", 0, "seed", 0.03),
        row("bbh_navigate", 0, "seed", 0.37, version=1),  # bbh_navigate is at version 2: not done
        {**row("sst2", 0, "random", 0.8), "provenance": {"commit": "abc", "task_version": rowsfile.task_version("sst2"),
                                                         "utc": "2026-12-06T10:00:00Z"}}])
    rows = rowsfile.load_rows(tmp_path / "rows.jsonl")
    assert set(run.done_rows(rows)) == {("sst2", 0, "seed"), ("sst2", 0, "random")}
    assert set(run.done_rows(rows, rerun_before="2026-12-06T11:00Z")) == set()
    assert set(run.done_rows(rows, rerun_before="2026-12-06T09:00Z")) == {("sst2", 0, "random")}
    run.main(["--suite", "classification", "--dry-run", "--out", str(tmp_path), "--only", "sst2:0",
              "bbh_navigate:0", "--method", "seed", "random"])
    out = capsys.readouterr().out
    assert re.search(r"sst2:0 seed +done \(before provenance, test 0.030\)", out)
    assert re.search(r"sst2:0 random +done \(2026-12-06T10:00:00Z, test 0.800\)", out)
    assert re.search(r"bbh_navigate:0 seed +todo", out) and "4 jobs in suite 'classification', 2 to run" in out
    # MIPROv2 light's calls are ours' budget; without its row, the suite's
    assert run.budget_of(rows, "sst2", 0, 123) == 123
    assert run.budget_of(rows + [row("sst2", 0, "mipro_light", 0.8)], "sst2", 0, None) == 400


def test_provenance_of_a_new_row(tmp_path):
    prov = rowsfile.provenance("smoke", "bbh_navigate", "ours@small-model-crossfit-both", "abc123+dirty")
    assert prov["commit"] == "abc123+dirty" and prov["suite"] == "smoke" and prov["task_version"] == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", prov["utc"])
    assert prov["preset"] == "configs/optimizer/small-model-crossfit-both.yaml"
    data = (ROOT / prov["preset"]).read_bytes()
    assert prov["preset_sha256"] == hashlib.sha256(data).hexdigest()[:12]
    ablation = rowsfile.provenance("ablations", "sst2", "ours@small-model-halving", None)
    assert ablation["preset"] == "experiments/presets/small-model-halving.yaml" and len(ablation["preset_sha256"]) == 12
    assert "preset" not in rowsfile.provenance("x", "sst2", "mipro_light", None)
    commit = rowsfile.git_commit()
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit)
    written = rowsfile.append_row(tmp_path / "rows.jsonl", {"task": "sst2", "seed": 0, "method": "seed"}, prov)
    rowsfile.append_row(tmp_path / "rows.jsonl", {"task": "sst2", "seed": 1, "method": "seed"}, prov)
    back = rowsfile.load_rows(tmp_path / "rows.jsonl")
    assert back[0] == written and back[0]["provenance"] == prov and len(back) == 2  # appended, not rewritten


def test_the_runner_writes_a_row_with_provenance(tmp_path, capsys):
    """The smoke suite's label-prior job end to end (no LM call): the row lands in OUT/rows.jsonl with its
    provenance, and the same command again finds it done."""
    argv = ["--suite", "smoke", "--method", "majority", "--out", str(tmp_path), "--no-tables"]
    assert run.main(argv) == 0
    (written,) = rowsfile.load_rows(tmp_path / "rows.jsonl")
    assert (written["task"], written["seed"], written["method"]) == ("sst2", 0, "majority")
    prov = written["provenance"]
    assert set(prov) >= {"commit", "suite", "task_version", "utc"} and prov["suite"] == "smoke"
    assert prov["task_version"] == rowsfile.task_version("sst2") and prov["commit"] == rowsfile.git_commit()
    capsys.readouterr()
    run.main(argv)
    assert len(rowsfile.load_rows(tmp_path / "rows.jsonl")) == 1 and "majority" not in capsys.readouterr().out


def test_tables_of_a_suite_are_remade_from_its_own_rows_with_its_verdict_method(tmp_path):
    """``--suite NAME --tables`` writes the tables beside NAME's rows, its verdict against the suite's ``ours``
    (the instruct suite's is the full engine), and runs no job."""
    write_rows(tmp_path / "rows.jsonl", [row("sst2", 0, "seed", 0.82), row("sst2", 0, "mipro_light", 0.74),
                                         row("sst2", 0, "ours", 0.84)])
    assert run.main(["--suite", "instruct", "--out", str(tmp_path), "--tables"]) == 0
    text = (tmp_path / "table.md").read_text()
    assert "| mipro_light | ours | ours - mipro_light |" in text and "| +0.100 |" in text
    assert len(rowsfile.load_rows(tmp_path / "rows.jsonl")) == 3


def test_tables_come_from_the_newest_row_of_each_key(tmp_path):
    rows = []
    for seed in (0, 1):
        rows += [row("sst2", seed, "seed", 0.03), row("sst2", seed, "mipro_light", 0.80),
                 row("sst2", seed, "ours@small-model-crossfit-both", 0.10)]
    rows.append(row("sst2", 0, "ours@small-model-crossfit-both", 0.90))  # supersedes seed 0's 0.10
    rows.append(row("sst2", 1, "ours@small-model-crossfit-both", 0.94))  # and seed 1's
    rows.append(row("bbh_sports", 0, "seed", 0.48, version=1))  # an earlier task version
    write_rows(tmp_path / "rows.jsonl", rows)
    text = make_tables.write_tables(tmp_path, ours="ours@small-model-crossfit-both", pages=False)
    assert "| sst2 | ours@small-model-crossfit-both | 2 | 0.920 |" in text and "0.100" not in text
    assert "| sst2 | mipro_light | 2 | 0.800 |" in text and "bbh_sports" not in text
    assert "| +0.120 | yes |" in text  # the verdict: ours - MIPROv2 light, above the seed prompt's interval
    assert (tmp_path / "table.md").read_text() == text
    assert json.loads((tmp_path / "table.json").read_text())[0]["task"] == "sst2"
    assert "| bbh_sports v1 | seed | 1 | 0.480 |" in (tmp_path / "table-old-versions.md").read_text()
    assert (tmp_path / "rows.jsonl").read_text().count("\n") == len(rows)  # the rows stay as they were


def test_headline_and_the_generated_page_blocks(tmp_path, monkeypatch):
    rows = [row("trec", 0, "seed", 0.0), row("trec", 0, "mipro_light", 0.3), row("trec", 0, "bfrs", 0.3),
            row("trec", 0, "ours@small-model-crossfit-both", 0.78), row("gsm8k", 0, "seed", 0.02),
            row("gsm8k", 0, "mipro_light", 0.017), row("gsm8k", 0, "ours@small-model-crossfit-both", 0.017)]
    write_rows(tmp_path / "rows.jsonl", rows)
    pages = (tmp_path / "README.md", tmp_path / "results.md")
    for p in pages:
        p.write_text("# Title\n\nbefore\n<!-- results:begin -->\nstale\n<!-- results:end -->\nafter\n")
    monkeypatch.setattr(make_tables, "PAGES", pages)
    make_tables.write_tables(tmp_path, ours="ours@small-model-crossfit-both", pages=True)
    readme = pages[0].read_text()
    assert readme.startswith("# Title\n\nbefore\n<!-- results:begin -->\n| task | test n |") and "stale" not in readme
    assert readme.endswith("<!-- results:end -->\nafter\n")
    lines = readme.splitlines()
    trec = next(x for x in lines if x.startswith("| trec |"))
    assert trec == "| trec | 300 | 0.000 [-0.050, 0.050] | — | 0.300 | 0.300 | — | **0.780** |"
    gsm = next(x for x in lines if x.startswith("| gsm8k |"))
    assert gsm.startswith("| gsm8k | 100 |") and "**" not in gsm  # a tie is not bold
    assert lines.index(trec) < lines.index(gsm)
    assert "| some method above the seed prompt's interval |" in pages[1].read_text()
    (tmp_path / "nomarkers.md").write_text("nothing\n")
    with pytest.raises(SystemExit, match="no <!-- results:begin -->"):
        make_tables.write_page(tmp_path / "nomarkers.md", "x")


def test_the_repository_pages_match_the_rows(tmp_path):
    """README.md and the results page hold the block make_tables.py makes from the committed rows."""
    rows = rowsfile.load_rows(make_tables.RESULTS / "rows.jsonl")
    assert rows and all("provenance" in r for r in rows)
    assert all(r["provenance"].get("commit") or "before provenance" in r["provenance"].get("note", "") for r in rows)
    from compare_tables import aggregate

    current, _ = make_tables.split_rows(rows)
    defaults = run.load_defaults()
    block = make_tables.headline(aggregate(current), lambda t: run.sizes_of(defaults, t))
    for page in make_tables.PAGES:
        assert block in page.read_text(), page


def test_example_task_rows_of_several_seeds_stay_side_by_side(tmp_path):
    """``example_tasks.py``: a task's row of one seed replaces only that seed's earlier row, and with several
    seeds the table adds per-task means and how many seeds beat the seed prompt at p < 0.05."""
    import example_tasks

    def r(task, seed, best, p):
        return {"task": task, "seed": seed, "baseline_test": 0.5, "baseline_ci": [0.4, 0.6], "best_test": best,
                "best_ci": [best - 0.1, best + 0.1], "best_val": best, "n_demos": 0, "instruction_origin": "seed",
                "significant": False, "lm_calls": 10, "test_n": 100, "vs_seed": {"diff": best - 0.5, "p": p},
                "verdict": {}, "wall_seconds": None, "peak_rss_mb": None}

    for row_ in (r("trec", 0, 0.7, 0.01), r("trec", 1, 0.6, 0.2), r("sst2", 0, 0.4, 0.01), r("trec", 1, 0.8, 0.001)):
        example_tasks.save_row(tmp_path, row_)
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(x["task"], x["seed"], x["best_test"]) for x in rows] == [("sst2", 0, 0.4), ("trec", 0, 0.7),
                                                                        ("trec", 1, 0.8)]
    table = example_tasks.make_table(rows)
    assert "| trec | 0, 1 | 0.500 | 0.750 | 2 of 2 |" in table
    assert "| sst2 | 0 | 0.500 | 0.400 | 0 of 1 |" in table  # a loss at p < 0.05 is not a win


def test_a_rerun_of_an_ours_job_starts_a_new_run_directory(tmp_path, monkeypatch):
    """``--rerun-before`` runs a job with an older row again; an ``ours`` job then gets a new run directory
    (resuming the old one would finish with the old run's trials and report them again)."""
    import compare

    seen = {}

    def fake_run_method(method, task, seed, splits, profile, cache, budget, args):
        seen[method] = args.fresh
        return {**row(task.task, seed, method, 0.5), "provenance": None}

    monkeypatch.setattr(compare, "run_method", fake_run_method)
    old_row = row("sst2", 0, "ours@fast", 0.8)
    old_row["provenance"]["utc"] = "2026-12-06T10:00:00Z"
    write_rows(tmp_path / "rows.jsonl", [old_row])
    assert run.main(["--suite", "smoke", "--method", "seed", "ours@fast", "--out", str(tmp_path), "--no-tables",
                     "--rerun-before", "2026-12-06T11:00Z"]) == 0
    assert seen == {"seed": False, "ours@fast": True}  # the seed job had no row: new, nothing to set aside
    old = tmp_path / "runs" / "sst2-s0-ours-fast"
    old.mkdir(parents=True)
    (old / "summary.json").write_text("{}")
    moved = compare.set_aside(old)
    assert not old.exists() and (moved / "summary.json").exists() and moved.name.startswith(old.name + ".superseded-")
    assert compare.set_aside(old) is None
