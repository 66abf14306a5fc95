"""The bad-input corpus (tests/corpus/): every mistyped file, option or endpoint gives exit status 2 and ONE
line on stderr naming the file, the field and a fix, no traceback (unless --debug), and a run directory that
already exists is left byte for byte as it was. (test_task.py covers `validate` on a few task-file errors.)"""

import shutil

import pytest

from conftest import ROOT, run_cli
from faultproxy import FaultProxy
from optimizer.cli import main

CORPUS = ROOT / "tests" / "corpus"
KEY = "sk-corpus-right-key-0001"

# (case id, argv after the task file, [words the one line must contain]); {dir} is the copied corpus
CASES = [
    ("malformed_yaml", ["malformed_yaml.yaml"], ["malformed_yaml.yaml", "malformed YAML", "line 2", "fix:"]),
    ("empty_task_file", ["empty.yaml"], ["empty.yaml", "file is empty", "fix:"]),
    ("unknown_key", ["unknown_key.yaml"], ["unknown_key.yaml", "instrution", "unknown key", "`instruction`"]),
    ("wrong_type", ["wrong_type.yaml"], ["wrong_type.yaml", "optimizer.trials", "fix:"]),
    ("wrong_type_list", ["wrong_type_list.yaml"], ["wrong_type_list.yaml", "optimizer.proposers", "fix:"]),
    ("missing_data_file", ["missing_data.yaml"], ["missing_data.yaml", "dataset.files.dev", "not found", "fix:"]),
    ("empty_data_file", ["empty_data.yaml"], ["empty_data.yaml", "dataset.files.dev", "empty", "fix:"]),
    ("wrong_encoding", ["wrong_encoding.yaml"], ["wrong_encoding.yaml", "dataset.encoding", "latin-1", "fix:"]),
    ("missing_column", ["missing_column.yaml"], ["missing_column.yaml", "inputs.0.column", "'sentence'",
                                                  "not found", "fix:"]),
    ("label_outside_label_set", ["label_outside.yaml"], ["label_outside.yaml", "output.labels", "'7'", "fix:"]),
    ("metric_raises", ["metric_raises.yaml"], ["metric_raises.yaml", "metric.function", "this metric is broken",
                                               "fix:"]),
    ("metric_file_missing", ["metric_missing.yaml"], ["metric_missing.yaml", "metric.function", "not found"]),
    ("unreachable_endpoint", ["good.yaml", "--lm", "{dir}/lm_unreachable.yaml"],
     ["lm_unreachable.yaml", "base_url", "unreachable", "start the server"]),
    ("bad_api_key", ["good.yaml", "--lm", "{dir}/lm_badkey.yaml"],
     ["lm_badkey.yaml", "api_key_env", "refused the API key", "CORPUS_TEST_KEY"]),
    ("api_key_variable_unset", ["good.yaml", "--lm", "{dir}/lm_nokey.yaml"],
     ["lm_nokey.yaml", "api_key_env", "CORPUS_UNSET_KEY is not set", "export"]),
    ("profile_unknown_key", ["good.yaml", "--lm", "{dir}/lm_unknown_key.yaml"],
     ["lm_unknown_key.yaml", "retries", "unknown key", "max_retries"]),
    ("profile_wrong_type", ["good.yaml", "--lm", "{dir}/lm_wrong_type.yaml"], ["lm_wrong_type.yaml", "timeout"]),
    ("no_prices_for_max_cost", ["good.yaml", "--lm", "{dir}/lm_unpriced.yaml", "--max-cost", "1"],
     ["prices.yaml", "models.some-unpriced-model", "--max-cost", "fix:"]),
    ("postgres_cannot_connect", ["good.yaml", "--storage", "postgresql://postgres@127.0.0.1:1/test"],
     ["--storage", "cannot open study storage", "fix:"]),
    ("redis_cannot_connect", ["good.yaml", "--storage", "redis://127.0.0.1:1/0"],
     ["--storage", "cannot open study storage", "fix:"]),
    ("not_a_storage_url", ["good.yaml", "--storage", "studies"], ["--storage", "not a storage URL", "fix:"]),
    ("bad_concurrency", ["good.yaml", "--concurrency", "0"], ["--concurrency", "fix:"]),
    ("bad_budget", ["good.yaml", "--max-calls", "-5"], ["--max-calls", "positive", "fix:"]),
    ("unknown_preset", ["good.yaml", "--preset", "no-such-preset"], ["--preset", "unknown optimizer preset",
                                                                     "small-model", "fix:"]),
    ("preset_unknown_key", ["good.yaml", "--preset", "{dir}/preset_typo.yaml"], ["preset_typo.yaml",
                                                                                "optimizer.scorng", "fix:"]),
    ("bad_search_calls", ["good.yaml", "--search-calls", "0"], ["--search-calls", "positive", "fix:"]),
    ("likelihood_without_labels", ["gsm_likelihood.yaml"], ["optimizer.scoring", "classification", "fix:"]),
]


@pytest.fixture(scope="module")
def key_server():
    with FaultProxy(None, api_key=KEY) as fp:
        yield fp


@pytest.fixture
def corpus(tmp_path, key_server, monkeypatch):
    d = tmp_path / "corpus"
    shutil.copytree(CORPUS, d)
    for prof in d.glob("lm_*.yaml"):
        prof.write_text(prof.read_text().replace("KEY_SERVER", key_server.url))
    monkeypatch.setenv("CORPUS_TEST_KEY", "sk-corpus-WRONG-key-9999")
    monkeypatch.delenv("CORPUS_UNSET_KEY", raising=False)
    # a run directory that already exists: nothing may change in it
    prev = tmp_path / "previous-run"
    prev.mkdir()
    (prev / "summary.json").write_text('{"best": {"val": 0.9}}\n')
    (prev / "run.json").write_text('{"fingerprint": "0123", "task": "earlier"}\n')
    (prev / "status.json").write_text('{"status": "finished"}\n')
    (prev / "study.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)))
    (prev / "trials.jsonl").write_text('{"trial": 0}\n')
    return d, prev


def snapshot(d):
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case, argv, expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_run_dir_intact(case, argv, expect, corpus, capsys, monkeypatch):
    d, prev = corpus
    monkeypatch.chdir(d)  # relative task paths, and no experiments/runs/ in the repository
    before = snapshot(prev)
    args = [str(d / argv[0])] + [a.replace("{dir}", str(d)) for a in argv[1:]] + ["--out", str(prev), "--trials", "2"]
    code = main(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: ")
    for word in expect:
        assert word in lines[0], (word, lines[0])
    assert "sk-corpus" not in err  # never a key
    assert snapshot(prev) == before


def test_bad_input_through_the_real_command_and_debug(corpus):
    d, prev = corpus
    before = snapshot(prev)
    r = run_cli(str(d / "wrong_encoding.yaml"), "--out", str(prev), cwd=d)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = run_cli(str(d / "wrong_encoding.yaml"), "--out", str(prev), "--debug", cwd=d)
    assert r.returncode == 2 and "Traceback" in r.stderr and "dataset.encoding" in r.stderr.splitlines()[-1]
    assert snapshot(prev) == before


def test_good_corpus_task_is_refused_by_an_existing_run_dir_of_another_run(corpus, capsys, monkeypatch):
    """Even a good command cannot write into a run directory that holds another run."""
    d, prev = corpus
    monkeypatch.chdir(d)
    before = snapshot(prev)
    code = main([str(d / "good.yaml"), "--out", str(prev), "--dry-run"])
    assert code == 0 and snapshot(prev) == before  # a dry run touches nothing
    code = main([str(d / "good.yaml"), "--out", str(prev), "--trials", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--out" in err and "holds a different run" in err
    assert snapshot(prev) == before
