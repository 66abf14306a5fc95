"""`optimize runs`: past runs with task, date, best score and status."""

import json
import shutil

from conftest import run_cli


def test_runs_lists_finished_failed_and_bench_directories(sst2_run, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(sst2_run.run, root / "sst2-20240101-120000")
    failed = root / "sst2-20240102-090000"
    shutil.copytree(sst2_run.run, failed, ignore=shutil.ignore_patterns("summary.json", "test_predictions.jsonl"))
    (failed / "status.json").write_text(json.dumps({"status": "failed"}))
    killed = root / "sst2-20240103-000000"
    shutil.copytree(sst2_run.run, killed, ignore=shutil.ignore_patterns("summary.json", "test_predictions.jsonl"))
    (killed / "status.json").write_text(json.dumps({"status": "running"}))
    (killed / ".lock").write_text("12345\n")  # its process is gone: nobody holds the lock
    bench = root / "bench-sst2-abc"
    bench.mkdir()
    (bench / "bench.json").write_text(json.dumps({
        "task": "sst2", "metric": "label_accuracy", "status": "finished",
        "config": {"task": "sst2", "lm": {"name": "local"}, "candidates": [{}, {}]},
        "candidates": [{"name": "seed", "mean": 0.1, "ci": [0.0, 0.2]}, {"name": "winner", "mean": 0.8,
                                                                         "ci": [0.7, 0.9]}]}))
    (tmp_path / "runs" / "stray-file.txt").write_text("not a run")
    (root / "empty-dir").mkdir()

    r = run_cli("runs", "--dir", str(root), "--json")
    assert r.returncode == 0, r.stderr
    entries = json.loads(r.stdout)
    by = {e["name"]: e for e in entries}
    assert set(by) == {"sst2-20240101-120000", "sst2-20240102-090000", "sst2-20240103-000000", "bench-sst2-abc"}
    assert by["sst2-20240103-000000"]["status"] == "running (no process)"
    summary = json.loads((sst2_run.run / "summary.json").read_text())
    ok = by["sst2-20240101-120000"]
    assert ok["status"] == "finished" and ok["task"] == "sst2" and ok["date"] == "2024-01-01 12:00"
    assert ok["best_test"] == summary["best"]["test"] and ok["best_val"] == summary["best"]["val"]
    assert ok["baseline_test"] == summary["baseline"]["test"] and ok["lm"] == "local"
    bad = by["sst2-20240102-090000"]
    assert bad["status"] == "failed" and bad["task"] == "sst2" and bad["best_test"] is None
    assert bad["trials_done"] == 4
    assert by["bench-sst2-abc"]["kind"] == "bench" and by["bench-sst2-abc"]["best_test"] == 0.8
    # newest first (bench: its bench.json time, i.e. now)
    assert [e["name"] for e in entries][1:] == ["sst2-20240103-000000", "sst2-20240102-090000", "sst2-20240101-120000"]

    md = run_cli("runs", "--dir", str(root), "--markdown")
    assert md.returncode == 0
    lines = md.stdout.strip().splitlines()
    assert lines[0].startswith("| run | kind | task | date | status |") and len(lines) == 2 + 4
    assert "failed" in md.stdout and "finished" in md.stdout
    table = run_cli("runs", "--dir", str(root))
    assert table.returncode == 0 and "sst2-20240101-120000" in table.stdout
    assert "no runs" in run_cli("runs", "--dir", str(tmp_path / "none")).stdout
