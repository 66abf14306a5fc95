"""Progress for the CLI: one live line while the run works, one table at the end (rich, on stderr)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text


def _fmt_secs(s: float | None) -> str:
    if s is None or s != s or s < 0:
        return "--:--"
    s = int(s)
    return f"{s // 60:d}:{s % 60:02d}"


class ProgressLine:
    """Consumes engine events and shows: phase, trial n/N, best, LM calls, cache hits, ETA."""

    def __init__(self, console: Console, backend_usage: Any = None, enabled: bool = True):
        self.console = console
        self.usage = backend_usage  # a callable returning Usage, set once the backend exists
        self.enabled = enabled
        self.phase = "starting"
        self.trials = 0
        self.trials_done = 0
        self.best: float | None = None
        self.started = time.perf_counter()
        self.search_started: float | None = None
        self.test_total = 0
        self.test_done = 0
        self.test_started: float | None = None
        self.live: Live | None = None

    def __enter__(self) -> "ProgressLine":
        if self.enabled:
            self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None

    def _eta(self) -> float | None:
        if self.phase == "search" and self.search_started and self.trials_done:
            per = (time.perf_counter() - self.search_started) / self.trials_done
            return per * (self.trials - self.trials_done)
        if self.phase == "test" and self.test_done and self.test_started:
            per = (time.perf_counter() - self.test_started) / self.test_done
            return per * (2 * self.test_total - self.test_done)
        return None

    def _render(self) -> Text:
        u = self.usage() if callable(self.usage) else None
        parts = [f"[{self.phase}]"]
        if self.trials:
            parts.append(f"trial {min(self.trials_done + (self.phase == 'search'), self.trials)}/{self.trials}")
        parts.append(f"best {self.best:.3f}" if self.best is not None else "best -")
        if u is not None:
            parts.append(f"LM calls {u.calls}")
            parts.append(f"cache hits {u.cache_hits}")
        if self.phase == "test" and self.test_total:
            parts.append(f"test {self.test_done}/{2 * self.test_total}")
        parts.append(f"elapsed {_fmt_secs(time.perf_counter() - self.started)}")
        parts.append(f"ETA {_fmt_secs(self._eta())}")
        return Text("  ".join(parts))

    def __call__(self, kind: str, **data: Any) -> None:
        if kind == "backend":
            self.usage = data["usage"]
        elif kind == "phase":
            self.phase = data["name"]
            if self.phase == "search":
                self.trials = data.get("trials", 0)
                self.search_started = time.perf_counter()
            if self.phase == "test":
                self.test_total = data.get("examples", 0)
                self.test_started = time.perf_counter()
        elif kind == "trial_end":
            rec = data["record"]
            self.trials_done += 1
            if rec["state"] == "complete" and (self.best is None or rec["score"] > self.best):
                self.best = rec["score"]
        elif kind == "example" and data.get("number", 0) < 0:  # the test report's examples
            self.test_done += 1
        if self.live is not None:
            self.live.update(self._render())


def summary_table(summary: dict[str, Any]) -> Table:
    t = Table(title=f"{summary['task']}: seed prompt vs winner ({summary['metric']})")
    t.add_column("prompt")
    t.add_column("demos", justify="right")
    t.add_column("val", justify="right")
    t.add_column("test", justify="right")
    t.add_column("test 95% CI", justify="right")
    t.add_column("prompt words", justify="right")
    for name in ("baseline", "best"):
        r = summary[name]
        t.add_row("seed" if name == "baseline" else f"winner (trial {r.get('trial')})", str(r["n_demos"]),
                  f"{r['val']:.3f}", f"{r['test']:.3f}", f"[{r['test_ci'][0]:.3f}, {r['test_ci'][1]:.3f}]",
                  str(r["prompt_words"]))
    for row in _baseline_rows(summary):
        t.add_row(*row)
    imp = summary["improvement"]
    verdict = summary.get("verdict")
    t.caption = ((f"verdict: {verdict['words']}\n" if verdict else "") +
                 f"test gain {imp['diff']:+.3f} [{imp['low']:+.3f}, {imp['high']:+.3f}], p{'<' if imp['p_value'] <= 0.0005 else '='}{max(imp['p_value'], 0.0005):.4f} · "
                 f"LM calls {summary['lm_calls']} (cache hits {summary['cache_hits']}) · "
                 f"{summary['wall_seconds']:.0f} s")
    return t


def _baseline_rows(summary: dict[str, Any]) -> list[tuple[str, ...]]:
    """The trivial baselines beside the seed prompt and the winner: the label prior and the random k-shot
    prompt (test only: its val is not scored)."""
    rows = []
    b = summary.get("baselines") or {}
    prior, kshot = b.get("label_prior"), b.get("random_kshot")
    if prior:
        rows.append((f"always {prior['label']!r}", "0", f"{prior['val']:.3f}", f"{prior['test']:.3f}",
                     f"[{prior['test_ci'][0]:.3f}, {prior['test_ci'][1]:.3f}]", "-"))
    if kshot:
        rows.append((f"seed + {kshot['k']} random demos", str(kshot["k"]), "-", f"{kshot['test']:.3f}",
                     f"[{kshot['test_ci'][0]:.3f}, {kshot['test_ci'][1]:.3f}]", "-"))
    return rows
