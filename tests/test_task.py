"""The task schema and `optimize validate` on good and bad files."""

import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_cli
from optimizer.errors import ConfigError, DataError, MetricError
from optimizer.task import load_task

SST2 = (ROOT / "tasks/sst2/task.yaml").read_text()


def write_task(tmp_path: Path, text: str, name="task.yaml") -> Path:
    data_dir = tmp_path / "data"
    if not data_dir.exists():
        data_dir.mkdir()
        for f in ("stsa.binary.train", "stsa.binary.dev", "stsa.binary.test"):
            (data_dir / f).write_bytes((ROOT / "tasks/sst2/data" / f).read_bytes())
    p = tmp_path / name
    p.write_text(text)
    return p


def test_example_tasks_validate():
    from optimizer.data import make_splits
    from optimizer.metrics import build_metric

    files = sorted((ROOT / "tasks").glob("*/*.yaml"))
    assert {f.name for f in files} == {"task.yaml", "judge.yaml"}
    for task in files:  # every shipped task file loads, splits its data and builds its metric
        spec = load_task(task)
        assert spec.task and spec.inputs and spec.metric.name
        splits = make_splits(spec)
        assert splits.train and splits.validation and splits.test
        build_metric(spec)


def test_unknown_key_suggests_the_right_one(tmp_path):
    p = write_task(tmp_path, SST2.replace("instruction:", "instrution:"))
    with pytest.raises(ConfigError) as e:
        load_task(p)
    msg = str(e.value)
    assert "instrution" in msg and "unknown key" in msg and "instruction" in msg and str(p) in msg


def test_nested_unknown_key(tmp_path):
    p = write_task(tmp_path, SST2.replace("  max_demos: 8", "  max_demo: 8"))
    with pytest.raises(ConfigError, match=r"optimizer\.max_demo: unknown key.*max_demos"):
        load_task(p)


def test_malformed_yaml_names_line(tmp_path):
    p = write_task(tmp_path, SST2.replace("task: sst2", "task: [sst2"))
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_task(p)


def test_wrong_type(tmp_path):
    p = write_task(tmp_path, SST2.replace("trials: 24", "trials: many"))
    with pytest.raises(ConfigError, match=r"optimizer\.trials"):
        load_task(p)


def test_unknown_metric_lists_choices(tmp_path):
    p = write_task(tmp_path, SST2.replace("metric: label_accuracy", "metric: accuracy"))
    with pytest.raises(ConfigError) as e:
        load_task(p)
    assert "metric.name" in str(e.value) and "label_accuracy" in str(e.value)


def test_include_merges_and_task_wins(tmp_path):
    write_task(tmp_path, "optimizer: {trials: 5, max_demos: 2}\nlm: local\n", name="base.yaml")
    text = "include: base.yaml\n" + SST2.replace("  trials: 24\n", "")
    p = write_task(tmp_path, text)
    spec = load_task(p)
    assert spec.optimizer.trials == 5  # from base
    assert spec.optimizer.max_demos == 8  # the task's own wins


def test_regex_and_custom_metric_need_their_keys(tmp_path):
    p = write_task(tmp_path, SST2.replace("metric: label_accuracy", "metric: {name: regex}"))
    with pytest.raises(ConfigError, match="pattern"):
        load_task(p)
    p = write_task(tmp_path, SST2.replace("metric: label_accuracy", "metric: {name: custom}"))
    with pytest.raises(ConfigError, match="function"):
        load_task(p)


# ---------------------------------------------------------------- the CLI: one line, exit 2

@pytest.mark.parametrize("edit, expect", [
    (("instruction:", "instrucion:"), ["instrucion", "unknown key", "instruction"]),
    (("data/stsa.binary.dev", "data/missing.dev"), ["dataset.files.dev", "not found", "missing.dev"]),
    (("  column: label", "  column: polarity"), ["output.column", "polarity", "not found"]),
    (("metric: label_accuracy", "metric: f1_macro"), ["metric.name", "f1_macro"]),
    (("task: sst2", "task: [sst2"), ["malformed YAML", "line"]),
    (("labels: {0: negative, 1: positive}", "labels: {0: negative, 2: positive}"), ["output.labels", "'1'"]),
    (("lm: local", "lm: nosuchprofile"), ["lm", "nosuchprofile"]),
])
def test_validate_bad_input_is_one_line_exit_2(tmp_path, edit, expect):
    p = write_task(tmp_path, SST2.replace(*edit))
    r = run_cli("validate", str(p))
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for word in expect:
        assert word in lines[0], lines[0]
    if "lm" not in expect:
        assert str(p) in lines[0]


def test_validate_debug_shows_traceback(tmp_path):
    p = write_task(tmp_path, SST2.replace("data/stsa.binary.dev", "data/missing.dev"))
    r = run_cli("validate", str(p), "--debug")
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_validate_good_file_reports_sizes_and_overlap():
    r = run_cli("validate", str(ROOT / "tasks/sst2/task.yaml"))
    assert r.returncode == 0, r.stderr
    assert "train 200" in r.stdout and "validation 100" in r.stdout and "test 1000" in r.stdout
    assert "train&test 2" in r.stdout  # SST-2 has 2 sentences in both train and test


def test_validate_reports_the_validation_top_up(tmp_path):
    p = write_task(tmp_path, SST2.replace("optimizer:\n", "optimizer:\n  min_validation: 150\n"))
    r = run_cli("validate", str(p))
    assert r.returncode == 0, r.stderr
    assert "validation 100" in r.stdout  # the task's split, as written
    assert "scores 150 validation examples, 50 of them from the end of train (150 stay" in r.stdout


def test_validate_reports_the_balanced_objective_and_its_label_counts(tmp_path):
    p = write_task(tmp_path, SST2.replace("optimizer:\n", "optimizer:\n  objective: balanced\n"))
    r = run_cli("validate", str(p))
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if "optimizer.objective" in x)
    counts = dict(part.rsplit(" ", 1) for part in line.split("(")[1].rstrip(")").split(", "))
    assert set(counts) == {"negative", "positive"} and sum(map(int, counts.values())) == 100
    r = run_cli("validate", str(write_task(tmp_path, SST2.replace("optimizer:\n", "optimizer:\n  objective: fair\n"))))
    assert r.returncode == 2 and "objective" in r.stderr


def test_run_with_bad_task_keeps_existing_run_dir(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text('{"keep": true}')
    p = write_task(tmp_path, SST2.replace("data/stsa.binary.dev", "data/gone.dev"))
    r = run_cli(str(p), "--out", str(out), "--trials", "1")
    assert r.returncode == 2 and "gone.dev" in r.stderr
    assert (out / "summary.json").read_text() == '{"keep": true}'


def test_included_paths_are_relative_to_the_included_file(tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "task.yaml").write_text(f"include: {ROOT / 'tasks/sst2/task.yaml'}\nsplits: {{test: {{from: test, limit: 7}}}}\n")
    spec = load_task(other / "task.yaml")
    assert spec.splits.test.limit == 7 and spec.splits.train.limit == 200
    assert Path(spec.dataset.files["train"]).is_absolute() and Path(spec.dataset.files["train"]).exists()


# ---------------------------------------------------------------- registries: the names the schema takes

def test_registry_is_lazy_ordered_and_names_the_known_ones_when_asked_for_another():
    from optimizer.lm.base import LMBackend
    from optimizer.registry import Registry

    reg = Registry("LM backend", field="backend", base=LMBackend)
    reg.register("zeta", "optimizer.lm._openai:OpenAIBackend")
    reg.register("alpha", "optimizer.lm._local:LocalBackend")
    assert reg.names() == ("zeta", "alpha") and "zeta" in reg and len(reg) == 2  # registration order
    assert reg.expected() == "'zeta' or 'alpha'"
    assert reg.get("alpha").__name__ == "LocalBackend" and reg.get("alpha") is reg.get("alpha")
    with pytest.raises(ConfigError, match=r"backend: unknown LM backend 'beta' \(fix: use one of zeta, alpha\)"):
        reg.get("beta")
    with pytest.raises(ValueError, match="registered already"):
        reg.register("alpha", "optimizer.lm._local:LocalBackend")
    reg.register("wrong", "optimizer.selectors:RandomSelector")
    with pytest.raises(TypeError, match="not a LMBackend"):
        reg.get("wrong")
    reg.unregister("wrong")
    assert reg.names() == ("zeta", "alpha")
    with reg.temporarily("gamma", "optimizer.lm._openai:OpenAIBackend") as cls:
        assert cls.__name__ == "OpenAIBackend" and "gamma" in reg
    assert "gamma" not in reg


def test_schema_takes_exactly_the_registered_names():
    from optimizer.plugins import METRICS, PROPOSERS, SELECTORS

    assert SELECTORS.names() == ("random", "bootstrap", "diverse", "knn")
    assert PROPOSERS.names() == ("offline", "lm", "reflective")
    assert METRICS.names() == ("exact_match", "label_accuracy", "contains", "token_f1", "numeric", "regex", "json_fields",
                              "judge", "custom")
    data = yaml.safe_load(SST2)
    data["optimizer"]["selectors"] = list(SELECTORS.names())
    data["optimizer"]["proposers"] = list(PROPOSERS.names())
    from optimizer.task import task_from_dict

    spec = task_from_dict(data, base_dir=ROOT / "tasks/sst2")
    assert spec.optimizer.selectors == list(SELECTORS.names()) and spec.optimizer.proposers == list(PROPOSERS.names())
    data["optimizer"]["selectors"] = ["random", "Random"]
    with pytest.raises(ConfigError, match=r"optimizer\.selectors\.1: invalid value 'Random' \(fix: use one of 'random', "
                                          r"'bootstrap', 'diverse' or 'knn'\)"):
        task_from_dict(data)


def test_registries_import_implementations_only_when_asked():
    """Validating a task imports no selector or proposer; a backend's class (its capabilities) loads no llama.cpp."""
    import subprocess
    import sys

    code = ("import sys; from optimizer.task import load_task; load_task(sys.argv[1]); "
            "print(sorted(m for m in ('optimizer.selectors', 'optimizer.proposers', 'llama_cpp') if m in sys.modules)); "
            "from optimizer.lm import backend_class, load_profile; print(backend_class(load_profile('local')).free, "
            "'llama_cpp' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "tasks/sst2/task.yaml")], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["[]", "True False"]
