"""The parity check of ``optimize export``: does the artifact, rendered and sent by a plain client,
reproduce the optimizer's prompts and scores? (The rules are in ``optimizer.export``'s docstring.)

Phases of ``check_parity``: read the artifact and sample the run's test examples (``_sample``);
choose the endpoint (``_target``: ``--endpoint``, a ``--lm`` profile, the run's own endpoint, or a
llama.cpp server started for the check); send the artifact through ``plain_client.py`` in its own
``python -I`` process (``_send``); compare the prompts (``_compare_prompts``) and the answers
(``_answers``); judge the scores (``judge``) and collect the failures (``_failures``).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from .artifacts import CHAT_TEMPLATE, opened_readout, read_artifact, run_evaluator
from .data import Example
from .errors import ConfigError, LMError
from .evaluate import Evaluator
from .llamacpp_server import llama_server
from .lm import backend_class
from .program import Candidate
from .runread import FinishedRun
from .stats import bootstrap_ci, mcnemar, paired_bootstrap

CLIENT = Path(__file__).with_name("plain_client.py")


@dataclass
class ParityReport:
    format: str
    n: int
    endpoint: str
    model: str
    optimizer_mean: float
    optimizer_ci: list[float]
    export_mean: float
    diff: float
    allowance: float
    diff_ci: list[float]
    p_value: float
    p_test: str
    prompts_equal: int
    agreement: float | None
    identical_text: int
    #: prompts whose token count, as the endpoint reported it, equals the optimizer's prompt's (local models)
    endpoint_prompt_tokens_equal: int | None
    min_agreement: float
    passed: bool
    failures: list[str] = field(default_factory=list)
    first_prompt_difference: str | None = None
    rule: str = ("fail if any prompt (or, for local models, the prompt token count the endpoint reports) differs; or |export - optimizer| on the sample > the allowance: half-width of "
                 "the optimizer's 95% interval (the larger of the run's reported test interval and the bootstrap "
                 "interval on the sample; at least 1/n); or the paired test gives p < 0.05; or agreement < "
                 "min_agreement")
    wall_seconds: float = 0.0
    client_optimizer_modules: list[str] = field(default_factory=list)
    latency_s_per_call: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("optimizer_mean", "export_mean", "diff", "allowance", "p_value"):
            d[k] = round(d[k], 6)
        d["optimizer_ci"] = [round(x, 6) for x in d["optimizer_ci"]]
        d["diff_ci"] = [round(x, 6) for x in d["diff_ci"]]
        return d

    def line(self) -> str:
        ag = "n/a" if self.agreement is None else f"{self.agreement:.3f}"
        tok = "" if self.endpoint_prompt_tokens_equal is None else (
            f" · endpoint token counts equal {self.endpoint_prompt_tokens_equal}/{self.n}")
        return (f"parity {self.format}: {'PASS' if self.passed else 'FAIL'} on {self.n} test examples · prompts "
                f"equal {self.prompts_equal}/{self.n}{tok} · export {self.export_mean:.3f} vs optimizer "
                f"{self.optimizer_mean:.3f} (|Δ| {abs(self.diff):.3f}, allowed {self.allowance:.3f}) · {self.p_test} "
                f"p={self.p_value:.3g} · agreement {ag} · identical answers {self.identical_text}/{self.n}")


def _first_difference(a: str, b: str) -> str:
    la, lb = a.split("\n"), b.split("\n")
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            return f"line {i + 1}: {x[:60]!r} vs optimizer {y[:60]!r}"
    return f"line {min(len(la), len(lb)) + 1}: lengths differ ({len(la)} vs {len(lb)} lines)"


def _token_counter(run: FinishedRun):
    """Counts a completion prompt's tokens as llama.cpp does (BOS + text, special tokens parsed), or None.

    Only for runs on a local GGUF model, whose tokenizer is at hand (vocabulary only, no weights)."""
    return backend_class(run.profile).token_counter(run.profile)


def _endpoint_profile(run: FinishedRun, lm: str | None):
    from .engine import resolve_lm

    prof = resolve_lm(run.task, lm)
    if not backend_class(prof).serves_openai_api or not prof.base_url:
        raise ConfigError(f"profile {prof.name!r} is not an OpenAI-compatible endpoint", field="--lm",
                          fix="give a profile with backend: openai and base_url, or --endpoint URL")
    return prof



@dataclass
class _Target:
    """Where the check sends the artifact; ``base_url`` None: a llama.cpp server started for the check."""
    base_url: str | None
    model: Any
    key_env: str | None
    where: str


@dataclass
class _PromptCheck:
    """How many rendered prompts equal the optimizer's, and (local models) how many reached the model
    with the optimizer's token count; the first difference of each."""
    equal: int = 0
    first_diff: str | None = None
    token_checked: int = 0
    tokens_equal: int = 0
    first_token_diff: str | None = None


def check_parity(run: FinishedRun, artifact_path: str | Path, fmt: str, *, endpoint: str | None = None,
                 model: str | None = None, lm: str | None = None, sample: int = 50, seed: int = 0,
                 min_agreement: float = 0.9, server: Callable[..., Any] = llama_server) -> ParityReport:
    """Render and send the artifact with the plain client; compare with the optimizer's test answers.

    ``server``: the llama.cpp server launcher used when no endpoint is given (``llama_server``).
    """
    t0 = time.perf_counter()
    if sample < 1:
        raise ConfigError("--sample must be positive", field="--sample", fix="pass --sample 1 or more")
    art, fmt = read_artifact(artifact_path)
    meta = art["prompt_optimizer"] if "prompt_optimizer" in art else art
    ev = run_evaluator(run)
    cand = run.candidate("best")
    items, examples = _sample(run, sample, seed)
    target = _target(run, meta, endpoint, model, lm)
    rows = _send(run, artifact_path, fmt, meta, examples, target, server)
    rows, client_meta = _client_rows(rows, examples)

    a = [float(p["best"]["score"]) for p in items]
    b = [float(ev.metric(e, r["parsed"])) for e, r in zip(examples, rows)]
    check = _compare_prompts(run, ev, cand, examples, rows)
    agreement, identical = _answers(run, ev, rows, items)
    verdict = judge(a, b, agreement=agreement, min_agreement=min_agreement, seed=seed,
                    reported_ci=(run.summary.get("best") or {}).get("test_ci"))
    failures = _failures(verdict, check, client_meta, len(examples))
    lats = [r["latency_s"] for r in rows if r.get("latency_s") is not None]
    return ParityReport(
        format=fmt, n=len(examples), endpoint=target.where, model=str(target.model),
        optimizer_mean=verdict["optimizer_mean"], optimizer_ci=verdict["optimizer_ci"],
        export_mean=verdict["export_mean"], diff=verdict["diff"], allowance=verdict["allowance"],
        diff_ci=verdict["diff_ci"], p_value=verdict["p_value"], p_test=verdict["p_test"],
        prompts_equal=check.equal, endpoint_prompt_tokens_equal=check.tokens_equal if check.token_checked else None,
        agreement=agreement, identical_text=identical, min_agreement=min_agreement, passed=not failures,
        failures=failures, first_prompt_difference=check.first_diff, wall_seconds=round(time.perf_counter() - t0, 3),
        client_optimizer_modules=list(client_meta.get("optimizer_modules") or []),
        latency_s_per_call=round(sum(lats) / len(lats), 4) if lats else None)


def _sample(run: FinishedRun, sample: int, seed: int) -> tuple[list[dict[str, Any]], list[Example]]:
    """A seeded sample of the run's test predictions, and their examples."""
    preds = run.test_predictions()
    rng = random.Random(f"parity:{seed}")
    chosen = sorted(rng.sample(range(len(preds)), min(sample, len(preds))))
    items = [preds[i] for i in chosen]
    examples = [Example(p["id"], {k: str(v) for k, v in p["inputs"].items()}, str(p["expected"])) for p in items]
    return items, examples


def _target(run: FinishedRun, meta: dict[str, Any], endpoint: str | None, model: str | None,
            lm: str | None) -> _Target:
    """``--endpoint``, else a ``--lm`` profile's endpoint, else the run's own endpoint (``openai`` runs), else
    a llama.cpp server on loopback; raises when the endpoint's key variable is not set."""
    key_env = None
    if endpoint:
        base_url, model_name, where = endpoint, model or meta.get("model") or run.profile.model, endpoint
    elif lm:
        prof = _endpoint_profile(run, lm)
        base_url, model_name, key_env, where = prof.base_url, model or prof.model, prof.api_key_env, prof.base_url
    elif backend_class(run.profile).serves_openai_api:
        base_url, model_name = run.profile.base_url, model or run.profile.model
        key_env, where = run.profile.api_key_env, run.profile.base_url
    else:
        base_url = None
        model_name = model or meta.get("model") or run.profile.model
        where = "llama.cpp server on loopback, started for this check"
    if key_env and not os.environ.get(key_env):
        raise ConfigError(f"environment variable {key_env} is not set", field="api_key_env",
                          fix=f"export {key_env}=<your key>")
    return _Target(base_url, model_name, key_env, where)


def _send(run: FinishedRun, artifact_path: str | Path, fmt: str, meta: dict[str, Any], examples: list[Example],
          target: _Target, server: Callable[..., Any]) -> list[dict[str, Any]]:
    """Every line the plain client wrote: one answer per example, then its ``_client`` record."""
    with tempfile.TemporaryDirectory(prefix="po-parity-") as tmpd:
        inputs = Path(tmpd) / "inputs.jsonl"
        inputs.write_text("".join(json.dumps({"id": e.id, "inputs": e.inputs}, ensure_ascii=False) + "\n"
                                  for e in examples), encoding="utf-8")
        out = Path(tmpd) / "out.jsonl"
        if target.base_url is None:
            from .lm._local import embedded_model_path

            model_file = run.profile.model_path or embedded_model_path(run.profile.model)
            # a chat-adapter run's messages go through the model's own chat template (a stock chat endpoint)
            template = None if run.adapter == "chat" else (
                meta.get("chat_template") if fmt == "openai-chat" and meta.get("chat_template") else CHAT_TEMPLATE)
            with server(model_file, alias=str(target.model), n_ctx=run.profile.n_ctx,
                        chat_template=template) as url:
                _call_client(url, artifact_path, inputs, out, target, len(examples))
        else:
            _call_client(target.base_url, artifact_path, inputs, out, target, len(examples))
        return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]


def _call_client(url: str, artifact_path: str | Path, inputs: Path, out: Path, target: _Target, n: int) -> None:
    """Run ``plain_client.py`` in its own ``python -I`` process (it must import nothing of this package)."""
    cmd = [sys.executable, "-I", str(CLIENT), str(artifact_path), str(inputs), str(out), "--base-url", url,
           "--model", str(target.model)]
    if target.key_env:
        cmd += ["--api-key-env", target.key_env]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120 + 30 * n,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LMError("the parity client timed out", field="--endpoint", fix="check the endpoint") from None
    if r.returncode != 0:
        msg = (r.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise LMError(msg, file=str(artifact_path), field="parity",
                      fix="check the endpoint, and that the artifact is an unedited `optimize export` file")


def _client_rows(rows: list[dict[str, Any]],
                 examples: list[Example]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(answers, the client's own record); raises unless the answers are for the examples given, in order."""
    client_meta = rows[-1].get("_client", {}) if rows else {}
    rows = [r for r in rows if "_client" not in r]
    if [r["id"] for r in rows] != [e.id for e in examples]:
        raise LMError("the parity client answered other examples than it was given", field="parity",
                      fix="report this as a bug")
    return rows, client_meta


def _compare_prompts(run: FinishedRun, ev: Evaluator, cand: Candidate, examples: list[Example],
                     rows: list[dict[str, Any]]) -> _PromptCheck:
    """Each rendered prompt (or the messages) against the optimizer's; for local models, the prompt token
    count the endpoint reports against the optimizer's prompt's."""
    check = _PromptCheck()
    count = _token_counter(run)
    if run.task.steps:
        # a chat program's messages go through the endpoint's chat template: no prompt of ours to count
        return _compare_program_prompts(ev, cand, examples, rows, count if ev.adapter_kind == "completion" else None)
    opened = opened_readout(run, ev, cand)  # a chat readout exported as the prompt the model read
    for e, r in zip(examples, rows):
        req = ev.request(cand, e.inputs)
        if opened is not None:
            req = replace(req, prompt=opened(req), messages=None)
        if req.prompt is not None:
            want = req.prompt
            got = [r.get("prompt")] + ([r["parts_prompt"]] if "parts_prompt" in r else [])
            ok = all(g == want for g in got)
            if not ok and check.first_diff is None:
                bad = next(g for g in got if g != want)
                check.first_diff = f"example {e.id}, " + (
                    "no rendered prompt" if bad is None else _first_difference(bad, want))
        else:
            want_msgs = [{"role": role, "content": c} for role, c in req.messages or ()]
            ok = r.get("messages") == want_msgs
            if not ok and check.first_diff is None:
                check.first_diff = f"example {e.id}: messages differ"
        check.equal += int(ok)
        if count is not None and req.prompt is not None:
            want_tokens = count(req.prompt)
            check.token_checked += 1
            if r.get("prompt_tokens") == want_tokens:
                check.tokens_equal += 1
            elif check.first_token_diff is None:
                check.first_token_diff = (f"example {e.id}: the endpoint counted {r.get('prompt_tokens')} prompt "
                                          f"tokens, the optimizer's prompt has {want_tokens}")
    return check


def _compare_program_prompts(ev: Any, cand: Candidate, examples: list[Example], rows: list[dict[str, Any]],
                             count: Callable[[str], int] | None) -> _PromptCheck:
    """A program's prompts, step by step: each step's prompt the client rendered (from the template and from
    the parts) against the optimizer's rendering of that step with the same values (the task inputs and the
    answers the client got from the steps before it); an example counts as equal when all its steps are."""
    check = _PromptCheck()
    for e, r in zip(examples, rows):
        values = {**e.inputs, **r.get("parsed", {})}
        got = {s["name"]: s for s in r.get("steps") or []}
        ok, tokens_ok = len(got) == len(ev.order), count is not None
        for i in ev.order:
            step = got.get(ev.names[i])
            req = ev.step_request(cand, i, values)
            want = req.prompt
            if want is None:  # a chat step: its messages (the endpoint applies its own chat template)
                want_msgs = [{"role": role, "content": c} for role, c in req.messages or ()]
                if step is None or step.get("messages") != want_msgs:
                    ok = False
                    if check.first_diff is None:
                        check.first_diff = f"example {e.id}, step {ev.names[i]}: " + (
                            "not run" if step is None else "messages differ")
                continue
            bad = [] if step is None else [g for g in (step.get("prompt"), step.get("parts_prompt")) if g != want]
            if step is None or bad:
                ok = False
                if check.first_diff is None:
                    check.first_diff = f"example {e.id}, step {ev.names[i]}: " + (
                        "not run" if step is None else _first_difference(bad[0] or "", want))
                continue
            if count is not None and step.get("prompt_tokens") != (want_tokens := count(want)):
                tokens_ok = False
                if check.first_token_diff is None:
                    check.first_token_diff = (f"example {e.id}, step {ev.names[i]}: the endpoint counted "
                                              f"{step.get('prompt_tokens')} prompt tokens, the optimizer's prompt "
                                              f"has {want_tokens}")
        check.equal += int(ok)
        if count is not None:  # an example counts when every step's prompt reached the model at its length
            check.token_checked += 1
            check.tokens_equal += int(tokens_ok and ok)
    return check


def _answers(run: FinishedRun, ev: Evaluator, rows: list[dict[str, Any]],
             items: list[dict[str, Any]]) -> tuple[float | None, int]:
    """(share of parsed answers equal to the optimizer's, None under sampled decoding; answers with
    identical text)."""
    out_name = run.task.output.name
    agree = [str(r["parsed"].get(out_name, "")) == str(p["best"]["prediction"].get(out_name, ""))
             for r, p in zip(rows, items)]
    identical = sum(1 for r, p in zip(rows, items) if r.get("text") == p["best"].get("text"))
    sampled = ev.temperature > 0
    agreement = None if sampled else sum(agree) / len(agree)
    return agreement, identical


def _failures(verdict: dict[str, Any], check: _PromptCheck, client_meta: dict[str, Any], n: int) -> list[str]:
    """Every failure: prompt token counts, then prompts, then the score rules, then the client's imports."""
    failures = list(verdict["failures"])
    if check.equal < n:
        failures.insert(0, f"{n - check.equal}/{n} prompts differ from the optimizer's "
                           f"(first: {check.first_diff})")
    if check.tokens_equal < check.token_checked:
        failures.insert(0, f"{check.token_checked - check.tokens_equal}/{check.token_checked} prompts reached the "
                           f"model with another length than the optimizer's ({check.first_token_diff}; for "
                           f"openai-chat: is the endpoint applying the artifact's chat_template?)")
    if client_meta.get("optimizer_modules"):
        failures.append(f"the plain client imported {', '.join(client_meta['optimizer_modules'])}")
    return failures


def judge(a: list[float], b: list[float], *, agreement: float | None = None, min_agreement: float = 0.9,
          reported_ci: list[float] | None = None, seed: int = 0) -> dict[str, Any]:
    """The score rules of the parity check on paired per-example scores (a: optimizer, b: export).

    The allowance is the half-width of the optimizer's 95% interval: the larger of the interval
    the run reported for the test split (``reported_ci``) and the bootstrap interval on the sample,
    and never less than one example (1/n; a sample the optimizer got all right has a zero-width
    bootstrap interval). Fails when |mean(b) - mean(a)| exceeds it, when the paired test (exact
    McNemar for 0/1 scores, paired bootstrap otherwise) has p < 0.05, or when the agreement of
    parsed answers is below ``min_agreement``. (Prompt equality is checked by the caller.)
    """
    opt_ci = bootstrap_ci(a, seed=seed)
    allowance = max((opt_ci.high - opt_ci.low) / 2, 1.0 / len(a),
                    (reported_ci[1] - reported_ci[0]) / 2 if reported_ci else 0.0)
    diff = paired_bootstrap(a, b, seed=seed)
    if all(x in (0.0, 1.0) for x in list(a) + list(b)):
        p_value, p_test = float(mcnemar(a, b)["p_value"]), "McNemar exact"
    else:
        p_value, p_test = float(diff["p_value"]), "paired bootstrap"
    export_mean = sum(b) / len(b)
    failures = []
    if abs(export_mean - opt_ci.mean) > allowance + 1e-12:
        failures.append(f"export score {export_mean:.3f} is outside the optimizer's interval "
                        f"[{opt_ci.low:.3f}, {opt_ci.high:.3f}]: |Δ| {abs(export_mean - opt_ci.mean):.3f} > "
                        f"{allowance:.3f}")
    if p_value < 0.05:
        failures.append(f"the paired difference {diff['diff']:+.3f} is significant ({p_test} p={p_value:.3g})")
    if agreement is not None and agreement < min_agreement:
        failures.append(f"only {agreement:.0%} of answers agree with the optimizer's (minimum {min_agreement:.0%})")
    return {"optimizer_mean": opt_ci.mean, "optimizer_ci": [opt_ci.low, opt_ci.high], "export_mean": export_mean,
            "diff": diff["diff"], "diff_ci": [diff["low"], diff["high"]], "allowance": allowance,
            "p_value": p_value, "p_test": p_test, "failures": failures, "passed": not failures}
