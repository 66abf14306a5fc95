import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

#: fixtures that reach a real resource (the embedded model, a llama.cpp server, a real run built on the
#: model); a test that uses one, directly or through another fixture, is marked ``integration``
REAL_FIXTURES = {"model_path", "instruct_model_path", "llama_server", "sst2_run"}


def pytest_collection_modifyitems(config, items):
    """Unit tests run on the scripted backend or the canned loopback server; every test that uses a
    real-resource fixture is an integration test (``pytest -m "not integration"`` leaves it out).
    Tests that reach a real resource without such a fixture (PostgreSQL, Redis, Chromium, the model
    through ``run_cli`` or ``create_backend``) carry ``pytest.mark.integration`` themselves."""
    for item in items:
        if REAL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


#: the optimizer settings the mechanism tests were written against, stated in full so that a change of the
#: engine's defaults does not move them: the defaults before 2026-12-06 (generated answers, three selectors,
#: one demo order, the seed prompt first, the plain mean, no cross-fitting)
MECHANISM_SETTINGS = {"scoring": ["generate"], "selectors": ["random", "bootstrap", "diverse"], "demo_orders": 1,
                      "start": "seed", "objective": "mean", "crossfit": 0}


def sst2_task(engine_defaults: bool = False, **overrides):
    """The SST-2 example task, with small splits for tests, under ``MECHANISM_SETTINGS`` (the engine's own
    defaults with ``engine_defaults``); ``overrides`` set optimizer keys."""
    from optimizer.task import task_from_dict

    data = yaml.safe_load((ROOT / "tasks/sst2/task.yaml").read_text())
    data["splits"]["train"]["limit"] = overrides.pop("train", 40)
    data["splits"]["validation"]["limit"] = overrides.pop("validation", 24)
    data["splits"]["test"]["limit"] = overrides.pop("test", 60)
    for k, v in {**({} if engine_defaults else MECHANISM_SETTINGS), **overrides}.items():
        data["optimizer"][k] = v
    return task_from_dict(data, base_dir=ROOT / "tasks/sst2")


@pytest.fixture(scope="session")
def model_path():
    from optimizer.lm._local import embedded_model_path

    return embedded_model_path()


@pytest.fixture(scope="session")
def instruct_model_path():
    """The embedded instruct model (Qwen2.5-Coder-0.5B-Instruct), assembled and hash-checked."""
    from optimizer.lm._embedded import INSTRUCT_MODEL, embedded_model_path

    return embedded_model_path(INSTRUCT_MODEL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(model_path, tmp_path_factory):
    """A real llama.cpp OpenAI-compatible server on loopback, serving the embedded model."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    fh = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host",
                             "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--model_alias", "gemma3-270m",
                             "--n_threads", "2"], stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    import urllib.request

    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).read()
            break
        except Exception:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("llama_cpp.server did not start")
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    fh.close()


def run_cli(*args, cwd=ROOT, env=None, timeout=600):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "optimizer.cli", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def sst2_run(tmp_path_factory):
    """A small finished SST-2 run on the real model (built once per session; see tests/conftest_runs.py)."""
    from conftest_runs import build_sst2_run

    return build_sst2_run(tmp_path_factory)
