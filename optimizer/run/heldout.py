"""Phase 4, the test report: the seed prompt and the winner scored on the validation split and on the
held-out test split, with 95% bootstrap intervals and a paired bootstrap test of the difference; the
random k-shot baseline (``verdict.random_kshot``) on the test split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..evaluate import EvalResult, Evaluator
from ..lm.base import LMCallFailed
from ..program import Candidate
from ..stats import Interval, bootstrap_ci, paired_bootstrap
from .context import RunContext


@dataclass
class HeldOut:
    """The report's scores of the seed prompt (``base``) and the winner (``best``)."""
    base_val: EvalResult
    best_val: EvalResult
    base_test: EvalResult
    best_test: EvalResult
    kshot_test: EvalResult | None = None  # the random k-shot baseline (test split only), if the winner has demos

    def intervals(self, seed: int) -> tuple[Interval, Interval, dict[str, float]]:
        """Test-split intervals of the seed prompt and the winner, and the paired test of winner - seed."""
        return (bootstrap_ci(self.base_test.scores, seed=seed), bootstrap_ci(self.best_test.scores, seed=seed),
                paired_bootstrap(self.base_test.scores, self.best_test.scores, seed=seed))


def score_held_out(ctx: RunContext, baseline: Candidate, best: Candidate,
                   kshot: Candidate | None = None) -> HeldOut:
    splits, evaluator, emit = ctx.splits, ctx.evaluator, ctx.emit
    emit("phase", name="test", examples=len(splits.test))
    u0 = ctx.backend.usage
    held = HeldOut(score(evaluator, baseline, splits.validation), score(evaluator, best, splits.validation),
                   score(evaluator, baseline, splits.test, lambda o: emit("example", number=-1)),
                   score(evaluator, best, splits.test, lambda o: emit("example", number=-2)))
    if kshot is not None:
        held.kshot_test = score(evaluator, kshot, splits.test)
    ctx.count("test", u0)  # beside what the promotion scored for the report (``verdict.promote``)
    return held


def score(evaluator: Evaluator, cand: Candidate, examples: list,
          on_outcome: Callable[[Any], None] | None = None) -> EvalResult:
    """Evaluate for the report: failed calls get one more round of retries, then stop the run."""
    res = evaluator.evaluate(cand, examples, on_outcome, tolerate_failures=True)
    if res.failed:
        res = evaluator.evaluate(cand, examples, tolerate_failures=True)  # answered ones are memoised
        if res.failed:
            err = next(o.error for o in res.outcomes if o.failed)
            raise LMCallFailed(f"{res.failed} of {len(examples)} report calls failed after retries ({err})",
                               field="base_url", fix="check the endpoint, then run the same command again to "
                                                     "continue (finished trials are kept)")
    return res
