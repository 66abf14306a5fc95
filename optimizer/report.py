"""``optimize report RUN_DIR``: one self-contained HTML page about a run.

Plots (matplotlib, inline base64 PNG; no network, no external script or style):

- ``plot-history``: score of every trial in order (pruned trials at their partial mean), the best
  so far, and the seed prompt's score;
- ``plot-importance``: Optuna's fANOVA parameter importances (instruction, demo set, number of
  demos), computed on a copy of ``study.db`` (the run's database is only read, so
  ``optuna-dashboard sqlite:///RUN_DIR/study.db`` keeps working);
- ``plot-length``: validation score against prompt length (words of the rendered template);
- ``plot-confusion``: confusion matrices of the seed prompt and the winner on the test split
  (classification tasks: tasks with a label set);
- ``plot-intervals``: seed prompt against winner on the test split with 95% bootstrap intervals,
  and the paired difference with its interval.

Tables: the seed prompt against the winner, every trial (the per-candidate table), the instruction
pool, and the winning prompt. A small inline script checks that every image decoded and records
the result in ``<body data-images-ok=N data-images-failed=M>`` (tests read it through headless
Chromium's ``--dump-dom``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .runread import FinishedRun

PLOTS = ("plot-history", "plot-importance", "plot-length", "plot-confusion", "plot-intervals")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "svg.hashsalt": "report", "figure.dpi": 100})
    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _f(x: Any, d: int = 3) -> str:
    return "—" if x is None else f"{float(x):.{d}f}"


def _ci(ci: Any) -> str:
    return f"[{_f(ci[0])}, {_f(ci[1])}]" if ci else "—"


# ---------------------------------------------------------------------------- plots

def plot_history(trials: list[dict[str, Any]], seed_val: float | None) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    comp = [t for t in trials if t.get("state") == "complete"]
    pruned = [t for t in trials if t.get("state") == "pruned"]
    ax.scatter([t["trial"] for t in comp], [t["score"] for t in comp], color="#1f77b4", label="complete", zorder=3)
    if pruned:
        ax.scatter([t["trial"] for t in pruned], [t["score"] for t in pruned], marker="x", color="#d62728",
                   label="pruned (partial mean)", zorder=3)
    best, xs, ys = None, [], []
    for t in sorted(comp, key=lambda t: t["trial"]):
        best = t["score"] if best is None else max(best, t["score"])
        xs.append(t["trial"])
        ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="#2ca02c", label="best so far")
    if seed_val is not None:
        ax.axhline(seed_val, color="grey", ls="--", lw=1, label="seed prompt (val)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("validation score")
    ax.set_title("Optimization history")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def param_importances(run: FinishedRun) -> tuple[dict[str, float], str | None]:
    """fANOVA importances from a copy of study.db; (importances, why not) ."""
    import optuna

    db = run.path / "study.db"
    if not db.exists():
        return {}, "no study.db in the run directory"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="po-report-") as tmpd:
        copy = Path(tmpd) / "study.db"
        shutil.copyfile(db, copy)
        storage = optuna.storages.RDBStorage(f"sqlite:///{copy}")
        try:
            names = optuna.get_all_study_names(storage)
            if not names:
                return {}, "the study database holds no study"
            study = optuna.load_study(study_name=names[0], storage=storage)
            complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            if len(complete) < 2:
                return {}, f"{len(complete)} complete trial(s): importances need at least 2"
            imp = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
            return {k: float(v) for k, v in imp.items()}, None
        except Exception as exc:  # too few distinct values, single parameter, ...
            return {}, f"importances not computable: {type(exc).__name__}: {str(exc)[:120]}"
        finally:
            storage.engine.dispose() if hasattr(storage, "engine") else None


def plot_importance(imp: dict[str, float], why: str | None) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    if imp:
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names], color="#9467bd")
        for i, n in enumerate(names):
            ax.text(imp[n], i, f" {imp[n]:.2f}", va="center", fontsize=8)
        ax.set_xlim(0, max(1.0, max(imp.values()) * 1.15))
        ax.set_xlabel("importance (fANOVA, share of variance of the validation score)")
    else:
        ax.text(0.5, 0.5, why or "no importances", ha="center", va="center", wrap=True)
        ax.set_axis_off()
    ax.set_title("Parameter importances")
    return _png(fig)


def plot_length(trials: list[dict[str, Any]], winner_trial: int | None) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    comp = [t for t in trials if t.get("state") == "complete" and t.get("prompt_words") is not None]
    pruned = [t for t in trials if t.get("state") == "pruned" and t.get("prompt_words") is not None]
    if comp:
        sc = ax.scatter([t["prompt_words"] for t in comp], [t["score"] for t in comp],
                        c=[(t.get("params") or {}).get("n_demos", 0) for t in comp], cmap="viridis", zorder=3,
                        label="complete")
        fig.colorbar(sc, ax=ax, label="demos")
    if pruned:
        ax.scatter([t["prompt_words"] for t in pruned], [t["score"] for t in pruned], marker="x", color="#d62728",
                   label="pruned (partial mean)", zorder=3)
    for t in trials:
        if t.get("trial") == 0 or t.get("trial") == winner_trial:
            ax.annotate("seed" if t["trial"] == 0 else "winner", (t["prompt_words"], t["score"]),
                        textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("prompt length (words of the rendered template)")
    ax.set_ylabel("validation score")
    ax.set_title("Score against prompt length")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def confusion(preds: list[dict[str, Any]], side: str, labels: list[str], out: str) -> list[list[int]]:
    from .metrics import map_to_label

    cols = labels + ["(other)"]
    m = [[0] * len(cols) for _ in labels]
    for p in preds:
        gold = p["expected"]
        if gold not in labels:
            continue
        got = map_to_label(str(p[side]["prediction"].get(out, "")), labels)
        m[labels.index(gold)][cols.index(got) if got in cols else len(labels)] += 1
    return m


def plot_confusion(mats: dict[str, list[list[int]]], labels: list[str]) -> str:
    plt = _plt()
    cols = labels + ["(other)"]
    side = 0.45 * len(cols) + 1.6
    fig, axes = plt.subplots(1, len(mats), figsize=(side * len(mats) + 0.8, side), layout="constrained")
    axes = axes if len(mats) > 1 else [axes]
    for k, (ax, (title, m)) in enumerate(zip(axes, mats.items())):
        ax.imshow(m, cmap="Blues")
        for i, row in enumerate(m):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                        color="white" if v > max(max(r) for r in m) / 2 else "black")
        ax.set_xticks(range(len(cols)), cols, rotation=40, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        if k == 0:
            ax.set_ylabel("expected")
        ax.set_title(title)
    fig.suptitle("Confusion matrices on the test split")
    return _png(fig)


def plot_intervals(summary: dict[str, Any]) -> str:
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(7.4, 2.6), gridspec_kw={"width_ratios": [3, 2]})
    names = ["seed prompt", f"winner (trial {summary['best'].get('trial')})"]
    for i, key in enumerate(("baseline", "best")):
        r = summary[key]
        lo, hi = r["test_ci"]
        ax.errorbar([r["test"]], [i], xerr=[[r["test"] - lo], [hi - r["test"]]], fmt="o", capsize=5,
                    color=["grey", "#1f77b4"][i], label="test, 95% CI" if i == 0 else None)
        ax.plot([r["val"]], [i], marker="D", ls="none", color="#ff7f0e", label="validation" if i == 0 else None)
        ax.text(r["test"], i + 0.12, f"{r['test']:.3f} [{lo:.3f}, {hi:.3f}]", ha="center", va="bottom",
                fontsize=8)
    ax.set_yticks([0, 1], names)
    ax.set_ylim(-0.5, 1.8)
    lows = [summary[k]["test_ci"][0] for k in ("baseline", "best")] + [summary[k]["val"] for k in ("baseline", "best")]
    highs = [summary[k]["test_ci"][1] for k in ("baseline", "best")] + [summary[k]["val"] for k in ("baseline", "best")]
    pad = max(0.05, (max(highs) - min(lows)) * 0.25)
    ax.set_xlim(min(lows) - pad, max(highs) + pad)
    ax.set_xlabel(summary.get("metric", "score"))
    ax.set_title("Seed prompt vs winner")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, fontsize=7, frameon=False)
    imp = summary.get("improvement") or {}
    if imp:
        ax2.errorbar([imp["diff"]], [0], xerr=[[imp["diff"] - imp["low"]], [imp["high"] - imp["diff"]]], fmt="o",
                     capsize=5, color="#2ca02c")
        ax2.axvline(0, color="grey", lw=1, ls="--")
        ax2.set_yticks([])
        ax2.set_title(f"paired test gain, p={imp.get('p_value', float('nan')):.3g}")
        ax2.set_xlabel("winner − seed (95% CI)")
    else:
        ax2.set_axis_off()
    return _png(fig)


# ---------------------------------------------------------------------------- page

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;color:#222;
     padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:13px} table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top} th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums} tr.winner td{background:#eef7ee}
tr.pruned td{color:#888} figure{margin:12px 0;display:inline-block;vertical-align:top}
figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:12px;color:#555;max-width:700px}
pre{background:#f7f7f7;padding:10px;font-size:12px;white-space:pre-wrap;border:1px solid #eee}
.note{color:#777;font-size:12px} #render-status{font-size:11px;color:#999}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll('figure img'));
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-ok', String(ok));
  document.body.setAttribute('data-images-failed', String(imgs.length - ok));
  document.getElementById('render-status').textContent =
      ok + ' of ' + imgs.length + ' plots rendered';
});
"""


def _figure(pid: str, png: str, caption: str) -> str:
    return (f'<figure id="{pid}"><img alt="{_e(caption)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of a run (default ``RUN_DIR/report.html``); returns its path."""
    run = FinishedRun.open(run_dir, statuses=("finished", "stopped"))
    trials = [t for t in run.trials() if t.get("score") is not None and t.get("state") in ("complete", "pruned")]
    cands = run.read_json("candidates.json", {}) or {}
    preds = run.test_predictions() if (run.path / "test_predictions.jsonl").exists() else []
    figs, notes = _figures(run, trials, preds)
    page = _page(run, trials, cands, figs, notes)
    target = Path(out) if out else run.path / "report.html"
    if target.exists() and target.is_dir():
        raise ConfigError(f"{target} is a directory", field="--out", fix="give a file name ending in .html")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)
    return target


def _figures(run: FinishedRun, trials: list[dict[str, Any]], preds: list[dict[str, Any]]) -> tuple[list[str], str]:
    """(the plots as <figure> elements, notes on the plots left out)."""
    s = run.summary
    labels = run.task.label_set
    out_name = run.task.output.name
    best, base = s["best"], s["baseline"]
    figs = [_figure("plot-history", plot_history(trials, base.get("val")),
                    "Every trial's validation score in order; pruned trials (raced out by the paired Wilcoxon "
                    "pruner) at the mean of the examples they saw.")]
    imp, why = param_importances(run)
    figs.append(_figure("plot-importance", plot_importance(imp, why),
                        "How much of the variance of the validation score each search dimension explains "
                        "(Optuna fANOVA on the complete trials)." + (f" {why}" if why else "")))
    figs.append(_figure("plot-length", plot_length(trials, best.get("trial")),
                        "Validation score against the length of the rendered prompt template; colour: demos."))
    if labels and preds:
        mats = {"seed prompt": confusion(preds, "baseline", labels, out_name),
                "winner": confusion(preds, "best", labels, out_name)}
        figs.append(_figure("plot-confusion", plot_confusion(mats, labels),
                            "Expected label (rows) against the label the answer maps to (columns); (other): no "
                            "label recognised."))
        confusion_note = ""
    else:
        confusion_note = ('<p class="note" id="plot-confusion-na">No confusion matrix: the task has no label set '
                          "(not a classification task).</p>")
    if best.get("test_ci") and base.get("test_ci"):
        figs.append(_figure("plot-intervals", plot_intervals(s),
                            "Test-split scores of the seed prompt and the winner with 95% percentile-bootstrap "
                            "intervals (validation scores as diamonds), and the paired bootstrap interval of the "
                            "difference."))
    else:
        confusion_note += ('<p class="note" id="plot-intervals-na">No test scores: the run stopped before its test '
                           f"phase ({_e(s.get('stopped'))}).</p>")
    return figs, confusion_note


def _program_params(p: dict[str, Any], cands: dict[str, Any]) -> dict[str, Any]:
    """A program trial's parameters as one row: each step's instruction index and text, its demo set, and
    the demos over all steps."""
    steps = cands.get("steps") or []
    texts = {(st["name"], i["index"]): i for st in steps for i in st.get("instructions", [])}
    label = " ".join(f'{st["name"]}#{p.get(st["name"] + ".instruction")}' for st in steps)
    text = " | ".join((texts.get((st["name"], p.get(st["name"] + ".instruction"))) or {}).get("text", "")[:70]
                      for st in steps)
    return {"instruction": label, "text": text, "n_demos": sum(int(p.get(st["name"] + ".n_demos", 0)) for st in steps),
            "demo_set": " ".join(f'{st["name"]}#{p.get(st["name"] + ".demo_set", "—")}' for st in steps)}


def _trial_rows(trials: list[dict[str, Any]], cands: dict[str, Any], best: dict[str, Any]) -> str:
    """The per-candidate table's rows: one per trial (the winner and pruned trials marked; a program's
    trial shows every step's choices)."""
    instr = {i["index"]: i for i in cands.get("instructions", [])}
    rows = []
    for t in trials:
        p = t.get("params") or {}
        if cands.get("steps"):
            q = _program_params(p, cands)
            p = {"instruction": q["instruction"], "demo_set": q["demo_set"], "n_demos": q["n_demos"]}
            instr = {q["instruction"]: {"origin": "", "text": q["text"]}}
        ins = instr.get(p.get("instruction"), {})
        cls = "winner" if t.get("trial") == best.get("trial") else ("pruned" if t.get("state") == "pruned" else "")
        rows.append(
            f'<tr class="{cls}"><td class="num">{_e(t.get("trial"))}</td><td>{_e(t.get("state"))}</td>'
            f'<td class="num">{_f(t.get("score"))}</td><td class="num">{_e(t.get("examples"))}</td>'
            f'<td>#{_e(p.get("instruction"))} {_e(ins.get("origin") or t.get("instruction_origin"))}</td>'
            f'<td>{_e((ins.get("text") or "")[:140])}</td>'
            f'<td>{_e(t.get("demo_selector") or "—")} #{_e(p.get("demo_set", "—"))}</td>'
            f'<td class="num">{_e(p.get("n_demos", 0))}</td><td class="num">{_e(t.get("prompt_words"))}</td>'
            f'<td class="num">{_e(t.get("lm_calls"))}</td><td class="num">{_e(t.get("cache_hits"))}</td>'
            f'<td class="num">{_f(t.get("seconds"), 1)}</td></tr>')
    return "".join(rows)


def _summary_rows(best: dict[str, Any], base: dict[str, Any]) -> str:
    """The seed prompt and the winner, one row each."""
    return "".join(
        f'<tr class="{"winner" if k == "best" else ""}"><td>{name}</td><td class="num">{_e(r.get("n_demos"))}</td>'
        f'<td class="num">{_f(r.get("val"))}</td><td class="num">{_f(r.get("test"))}</td>'
        f'<td class="num">{_ci(r.get("test_ci"))}</td>'
        f'<td class="num">{_e(r.get("prompt_words"))}</td><td>{_e(_instruction_text(r))}</td></tr>'
        for k, name, r in (("baseline", "seed prompt", base), ("best", f"winner (trial {best.get('trial')})", best)))


def _judge_line(s: dict[str, Any]) -> str:
    """The judge metric's calls, apart from the task LM's (empty without a judge)."""
    j = s.get("judge")
    if not j:
        return ""
    return (f' · <span id="judge-calls">judge {_e(j.get("lm"))}: {_e(j.get("calls"))} calls (cache hits '
            f'{_e(j.get("cache_hits"))}), not among the LM calls</span>')


def _instruction_text(r: dict[str, Any]) -> str:
    """A prompt's instruction (a program's: every step's, named)."""
    if r.get("steps"):
        return " · ".join(f'{st.get("name")}: {st.get("instruction")}' for st in r["steps"])
    return str(r.get("instruction") or "")


def _baseline_rows(s: dict[str, Any]) -> str:
    """The trivial baselines beside them: the label prior and the random k-shot prompt (scored on test only)."""
    b = s.get("baselines") or {}
    rows = []
    for name, r, demos, text in (
            (f"always {(b.get('label_prior') or {}).get('label')!r}", b.get("label_prior"), 0, "(no LM call)"),
            (f"seed + {(b.get('random_kshot') or {}).get('k')} random demos", b.get("random_kshot"),
             (b.get("random_kshot") or {}).get("k"), "the seed instruction")):
        if r:
            rows.append(f'<tr class="baseline"><td>{_e(name)}</td><td class="num">{_e(demos)}</td>'
                        f'<td class="num">{_f(r.get("val"))}</td><td class="num">{_f(r.get("test"))}</td>'
                        f'<td class="num">{_ci(r.get("test_ci"))}</td><td class="num">—</td><td>{_e(text)}</td></tr>')
    return "".join(rows)


def _verdict_html(s: dict[str, Any]) -> str:
    """The verdict in words, and how the winner was promoted."""
    v, promo = s.get("verdict"), s.get("promotion")
    if not v:
        return '<p id="verdict" class="note">No verdict: the run has no test report.</p>'
    out = f'<p id="verdict" class="verdict-{_e(v.get("status"))}"><b>Verdict: {_e(v.get("words"))}</b> ' \
          f'(paired tests against each baseline on the test split, Holm-corrected, alpha {_e(v.get("alpha"))}).</p>'
    if promo:
        out += f'<p id="promotion" class="note">Promotion ({_e(promo.get("rule"))}): {_e(promo.get("why"))}.</p>'
    return out


def _page(run: FinishedRun, trials: list[dict[str, Any]], cands: dict[str, Any], figs: list[str],
          confusion_note: str) -> str:
    """The whole HTML page."""
    s = run.summary
    best, base = s["best"], s["baseline"]
    rows = _trial_rows(trials, cands, best)
    pool = "".join(f'<tr><td class="num">{_e(i["index"])}</td><td>{_e(i["origin"])}</td><td>{_e(i["text"])}</td></tr>'
                   for i in cands.get("instructions", []))
    pool += "".join(f'<tr><td class="num">{_e(st["name"])} #{_e(i["index"])}</td><td>{_e(i["origin"])}</td>'
                    f'<td>{_e(i["text"])}</td></tr>' for st in cands.get("steps", []) for i in st.get("instructions", []))
    imp_line = s.get("improvement") or {}
    lm = s.get("lm") or {}
    summary_rows = _summary_rows(best, base) + _baseline_rows(s)
    prompt = (run.path / "prompt.txt").read_text(encoding="utf-8") if (run.path / "prompt.txt").exists() else s.get(
        "prompt", "")
    trials_info = s.get("trials") or {}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(s.get('task'))}: optimization report</title>
<style>{CSS}</style></head>
<body data-images-ok="pending">
<h1>{_e(s.get('task'))}: optimization report</h1>
<p class="meta">run <code>{_e(run.path.name)}</code> · status {_e(run.status)} · LM {_e(lm.get('name'))}
({_e(lm.get('backend'))}, {_e(lm.get('model'))}) · adapter {_e(s.get('adapter'))} · program {_e(s.get('program'))}
· metric {_e(s.get('metric'))} · seed {_e(s.get('seed'))} · splits {_e(json.dumps(s.get('splits')))}
· trials {_e(trials_info.get('complete'))} complete, {_e(trials_info.get('pruned'))} pruned of
{_e(trials_info.get('requested'))} · LM calls {_e(s.get('lm_calls'))} (cache hits {_e(s.get('cache_hits'))}){_judge_line(s)}
· {_f(s.get('wall_seconds'), 0)} s · written {_e(time.strftime('%Y-%m-%d %H:%M'))}</p>
<p id="render-status"></p>

<h2>Seed prompt vs winner</h2>
<table id="summary-table"><tr><th>prompt</th><th>demos</th><th>val</th><th>test</th><th>test 95% CI</th>
<th>prompt words</th><th>instruction</th></tr>{summary_rows}</table>
<p>Paired test gain {_f(imp_line.get('diff'))} [{_f(imp_line.get('low'))}, {_f(imp_line.get('high'))}],
p = {_f(imp_line.get('p_value'), 4)} (paired bootstrap on {_e((s.get('splits') or {}).get('test'))} test examples).</p>
{_verdict_html(s)}

<h2>Plots</h2>
{''.join(figs)}
{confusion_note}

<h2>Trials (per-candidate table)</h2>
<table id="candidates-table"><tr><th>trial</th><th>state</th><th>val score</th><th>examples</th>
<th>instruction</th><th>instruction text</th><th>demo set</th><th>demos</th><th>prompt words</th><th>LM calls</th>
<th>cache hits</th><th>s</th></tr>{rows}</table>

<h2>Instruction pool</h2>
<table id="instruction-pool"><tr><th>#</th><th>origin</th><th>text</th></tr>{pool}</table>

<h2>Winning prompt</h2>
<pre id="winning-prompt">{_e(prompt)}</pre>
<p class="note">The study database is <code>study.db</code> in the run directory:
<code>optuna-dashboard sqlite:///{_e(run.path.resolve() / 'study.db')}</code></p>
<script>{SCRIPT}</script>
</body></html>
"""
