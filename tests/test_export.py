"""`optimize export`: every format of a real SST-2 run passes its parity check against a real llama.cpp
server through the plain `openai` client; tampered exports fail it; no secret is written."""

import ast
import json
import socket
import sys

import pytest
import yaml

from conftest import run_cli
from optimizer.export import (CHAT_TEMPLATE, CLIENT, FORMATS, ParityError, build_artifact, export_run, judge,
                              llama_server, render_chat, verify_export)
from optimizer.program import build_program
from optimizer.runread import FinishedRun

SAMPLE = 10


@pytest.fixture(scope="module")
def parity_server(model_path):
    """llama.cpp's server with the exports' chat template, as the openai-chat artifact requires."""
    with llama_server(model_path, alias="gemma3-270m-q4_k_m", chat_template=CHAT_TEMPLATE, threads=2) as url:
        yield url


@pytest.fixture(scope="module")
def exports(sst2_run, parity_server, tmp_path_factory):
    d = tmp_path_factory.mktemp("exports")
    files, reports = {}, {}
    for fmt in FORMATS:
        files[fmt] = d / (f"winner.{fmt}.yaml" if fmt == "yaml" else f"winner.{fmt}.json")
        reports[fmt] = export_run(sst2_run.run, fmt, files[fmt], endpoint=parity_server, sample=SAMPLE)
    return files, reports


def test_every_format_passes_its_parity_check(sst2_run, exports):
    files, reports = exports
    run = FinishedRun.open(sst2_run.run)
    for fmt in FORMATS:
        rep = reports[fmt]
        print(rep.line())  # the measured numbers (pytest -s)
        assert rep.passed, rep.failures
        assert rep.n == SAMPLE and rep.prompts_equal == SAMPLE  # byte-for-byte the optimizer's prompts
        assert rep.agreement >= 0.9 and abs(rep.diff) <= rep.allowance
        assert rep.client_optimizer_modules == []
        text = files[fmt].read_text()
        art = yaml.safe_load(text) if fmt == "yaml" else json.loads(text)
        meta = art["prompt_optimizer"] if fmt == "dspy" else art
        assert meta["parity"]["passed"] and meta["parity"]["n"] == SAMPLE
        assert meta["model"] == "gemma3-270m-q4_k_m" and meta["parameters"]["max_tokens"] == 4
        assert meta["extra_body"] == {"repeat_penalty": 1.0}
        assert meta["source"]["scores"]["test"] == run.summary["best"]["test"]
        assert meta["source"]["run_dir"] == str(sst2_run.run.resolve())
    chat = json.loads(files["openai-chat"].read_text())
    assert chat["chat_template"] == CHAT_TEMPLATE and "chat_template" in chat["requires"]
    roles = [m["role"] for m in chat["messages"]]
    n_demos = run.summary["best"]["n_demos"]
    assert roles == ["system"] + ["user", "assistant"] * n_demos + ["user"]
    assert chat["messages"][-1]["content"].startswith("Review: {{sentence}}")
    assert render_chat(chat["messages"]) == (sst2_run.run / "prompt.txt").read_text().rstrip("\n")
    completion = json.loads(files["completion"].read_text())
    assert completion["template"] == (sst2_run.run / "prompt.txt").read_text().rstrip("\n")
    # the dspy export is still a DSPy program
    program = build_program(run.task)
    program.load(str(files["dspy"]))
    assert len(program.demos) == n_demos and program.signature.instructions == run.summary["best"]["instruction"]


def tamper(path, fmt):
    """Change the instruction the way a person editing the file would."""
    text = path.read_text()
    art = yaml.safe_load(text) if fmt == "yaml" else json.loads(text)
    new = "Classify the movie review as positive or negative."
    if fmt == "yaml":
        old = art["instruction"]
        art["instruction"] = new
        art["template"] = art["template"].replace(old, new, 1)
    elif fmt == "completion":
        old = art["template"].split("\n\nReview:")[0]
        art["template"] = art["template"].replace(old, new, 1)
    elif fmt == "openai-chat":
        art["messages"][0]["content"] = new
    else:
        state = art if "signature" in art else art["predict"]
        state["signature"]["instructions"] = new
    out = path.with_name("tampered-" + path.name)
    out.write_text(yaml.safe_dump(art) if fmt == "yaml" else json.dumps(art))
    return out


def test_a_tampered_export_fails_its_parity_check(sst2_run, exports, parity_server):
    files, _ = exports
    for fmt in ("yaml", "openai-chat", "dspy"):
        with pytest.raises(ParityError, match="parity check failed") as info:
            verify_export(sst2_run.run, tamper(files[fmt], fmt), endpoint=parity_server, sample=3)
        msg = str(info.value)
        assert "3/3 prompts differ from the optimizer's" in msg and "line 1" in msg, msg
        assert len(msg.splitlines()) == 1
    rep = verify_export(sst2_run.run, tamper(files["dspy"], "dspy"), endpoint=parity_server, sample=2,
                        raise_on_fail=False)
    assert not rep.passed and rep.prompts_equal == 0 and rep.first_prompt_difference.startswith("example test:")
    # through the CLI: one line on stderr, exit status 2; the untouched file verifies
    r = run_cli("export", str(sst2_run.run), "--verify", str(tamper(files["completion"], "completion")), "--endpoint",
                parity_server, "--sample", "2")
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "parity check failed" in r.stderr
    r = run_cli("export", str(sst2_run.run), "--verify", str(files["completion"]), "--endpoint", parity_server,
                "--sample", "2")
    assert r.returncode == 0 and "PASS" in r.stdout, r.stderr


def test_openai_chat_export_fails_on_an_endpoint_with_the_models_own_chat_template(sst2_run, exports, model_path):
    """What a production user gets by sending the messages to a stock server: another prompt, caught."""
    files, _ = exports
    with llama_server(model_path, alias="gemma3-270m-q4_k_m", chat_template=None, threads=2) as stock:
        rep = verify_export(sst2_run.run, files["openai-chat"], endpoint=stock, sample=3, raise_on_fail=False)
    assert rep.prompts_equal == 3  # the artifact itself is intact ...
    assert rep.endpoint_prompt_tokens_equal == 0 and not rep.passed  # ... but the endpoint sent another prompt
    assert "chat_template" in rep.failures[0]


def test_score_rule_of_the_parity_check():
    a = [1.0] * 30 + [0.0] * 10
    assert judge(a, list(a), agreement=1.0)["passed"]
    one_flip = list(a)
    one_flip[0] = 0.0
    assert judge(a, one_flip, agreement=0.975)["passed"]
    many = [0.0] * 20 + a[20:]  # 20 examples that the optimizer got right are now wrong
    v = judge(a, many, agreement=0.5)
    assert not v["passed"] and any("outside the optimizer's interval" in f for f in v["failures"])
    assert any("McNemar" in f for f in v["failures"]) and any("agree" in f for f in v["failures"])


def test_export_starts_and_stops_its_own_server(sst2_run, tmp_path, monkeypatch):
    import optimizer.export as export

    urls = []
    real = export.llama_server

    def spy(*args, **kwargs):
        cm = real(*args, **kwargs)

        class Wrapped:
            def __enter__(self):
                urls.append(cm.__enter__())
                return urls[-1]

            def __exit__(self, *exc):
                return cm.__exit__(*exc)
        return Wrapped()

    monkeypatch.setattr(export, "llama_server", spy)
    rep = export_run(sst2_run.run, "completion", tmp_path / "c.json", sample=3)
    assert rep.passed and "started for this check" in rep.endpoint and len(urls) == 1
    port = int(urls[0].rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()  # stopped afterwards


def test_a_key_from_the_environment_is_used_and_never_written(sst2_run, parity_server, tmp_path):
    secret = "sk-test-" + "9" * 24
    prof = tmp_path / "endpoint.yaml"
    prof.write_text(yaml.safe_dump({"backend": "openai", "base_url": parity_server, "model": "gemma3-270m-q4_k_m",
                                    "api_key_env": "PO_TEST_SECRET"}))
    out = tmp_path / "winner.yaml"
    r = run_cli("export", str(sst2_run.run), "--format", "yaml", "--out", str(out), "--lm", str(prof), "--sample", "3",
                env={"PO_TEST_SECRET": secret})
    assert r.returncode == 0, r.stderr
    assert secret not in out.read_text() and secret not in r.stdout + r.stderr
    art = yaml.safe_load(out.read_text())
    assert art["parity"]["passed"] and art["parity"]["endpoint"] == parity_server
    # without the variable: one line naming it, nothing written
    r = run_cli("export", str(sst2_run.run), "--format", "yaml", "--out", str(tmp_path / "no.yaml"), "--lm", str(prof),
                env={"PO_TEST_SECRET": ""})
    assert r.returncode == 2 and "PO_TEST_SECRET" in r.stderr and not (tmp_path / "no.yaml").exists()


def test_plain_client_imports_nothing_of_ours():
    tree = ast.parse(CLIENT.read_text())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            mods.add(node.module.split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"openai", "yaml", "jinja2", "__future__"}
    assert mods <= allowed, mods - allowed


def test_chat_template_is_what_llama_cpp_renders(sst2_run):
    from llama_cpp.llama_chat_format import hf_tokenizer_config_to_chat_formatter

    art = build_artifact(FinishedRun.open(sst2_run.run), "openai-chat")
    fmt = hf_tokenizer_config_to_chat_formatter({"chat_template": art["chat_template"], "bos_token": "<bos>",
                                                 "eos_token": "<eos>"})
    prompt = fmt(messages=art["messages"]).prompt
    assert prompt == "<bos>" + (sst2_run.run / "prompt.txt").read_text().rstrip("\n")


def test_a_chat_prompt_exported_with_its_template_applied_is_not_read_back_as_a_candidate():
    """A local chat readout's completion export holds the model's chat template already applied, which no
    candidate of the run's chat adapter renders to: bench says so in one line instead of mismatching."""
    from optimizer.artifacts import artifact_template
    from optimizer.errors import ConfigError

    doc = {"format": "completion", "template": "<|im_start|>system\n...", "chat_template": "applied: the model's own"}
    with pytest.raises(ConfigError, match="chat template already applied") as err:
        artifact_template(doc, "c.json")
    assert err.value.fix == "bench the run directory instead"
    assert artifact_template({"format": "completion", "template": "Review: {{review}}"}, "c.json").startswith("Review")
