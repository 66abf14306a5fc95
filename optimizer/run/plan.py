"""The dry run (``optimize --dry-run``): what a run would spend, projected without a single LM call."""

from __future__ import annotations

from typing import Any

from ..budget import cost_of, estimate_tokens, load_prices
from ..data import search_splits, selection_examples
from ..program import Candidate
from ..plugins import PROPOSERS, SELECTORS
from ..selectors import SelectionContext
from ..task import TaskSpec
from .inputs import check_metric, judge_profile, make_evaluator, resolve_lm
from .options import RunOptions, check_options
from .verdict import CONFIRMED, confirmation_calls, confirmation_size


def _judge_row(task: TaskSpec, evaluator: Any, splits: Any, rows: dict[str, dict[str, Any]]) -> Any:
    """The judge metric's calls (one per answer the task LM gives, an upper bound: identical answers are
    judged once) and their cost on the judge's profile; None for a metric without an LM."""
    metric = evaluator.metric
    if not metric.needs_lm:
        return None
    jp = judge_profile(task)
    metric.chat = jp.resolved_adapter == "chat"
    calls = sum(rows[k]["calls"] for k in ("bootstrap", "search", "test", "confirmation"))
    ex = splits.validation[0]
    per = estimate_tokens(metric.request(ex, str(ex.output)))[0]
    row = {"calls": calls, "prompt_tokens": calls * per, "completion_tokens": calls * 3}
    jprices = load_prices(jp)
    row["cost"] = round(cost_of(jprices, row["prompt_tokens"], row["completion_tokens"]), 6) if jprices else None
    return row


class _ProgramPlan:
    """A program's share of the plan: every step's call, rendered with the values the data holds (an
    intermediate field the data lacks renders empty), a typical program with k of its data demos per step."""

    def __init__(self, task: TaskSpec, evaluator: Any, train: list, k: int):
        from ..steps import labelled_values, step_examples

        self.task, self.ev = task, evaluator
        self.subs = [sub.task for sub in evaluator.steps]
        labelled = [(ex.id, labelled_values(task, ex)) for ex in train]
        self.seed = evaluator.seed()
        self.pools = [step_examples(task, i, labelled) for i in range(len(self.subs))]  # the data's examples
        self.typical = evaluator.program([Candidate(sub.instruction, tuple(pool[:k]))
                                          for sub, pool in zip(self.subs, self.pools)])
        self.max_tokens = sum(sub.max_tokens for sub in evaluator.steps)

    def tokens(self, cand: Candidate, examples: list) -> int:
        from ..steps import labelled_values

        return sum(estimate_tokens(self.ev.step_request(cand, i, labelled_values(self.task, ex)))[0]
                   for ex in examples for i in self.ev.order)


def plan(task: TaskSpec, options: RunOptions | None = None) -> dict[str, Any]:
    """What a run would spend, projected without a single LM call: calls and tokens per phase (upper
    bounds: no pruning, cold cache), and the cost where prices are known."""
    opts = options or RunOptions()
    seed = task.optimizer.seed if opts.seed is None else opts.seed
    n_trials = opts.trials or task.optimizer.trials
    limits = check_options(opts, n_trials)
    splits = search_splits(task)
    profile = opts.backend.profile if opts.backend is not None else resolve_lm(task, opts.lm)
    prices = load_prices(profile)
    evaluator = make_evaluator(task, profile, None)  # renders prompts; never calls
    check_metric(evaluator, splits)
    max_demos = task.optimizer.max_demos
    k = (max_demos + 1) // 2  # n_demos is drawn from 0..max_demos
    demos = tuple(splits.train[:k])

    steps = _ProgramPlan(task, evaluator, splits.train, k) if task.steps else None

    def tokens(cand: Candidate, examples: list) -> int:
        if steps is not None:
            return steps.tokens(cand, examples)
        total = 0
        for ex in examples:
            req = evaluator.request(cand, ex.inputs)
            total += estimate_tokens(req)[0]
        return total

    rows: dict[str, dict[str, Any]] = {}
    inst = task.optimizer.instructions
    asks = [r for k in dict.fromkeys(task.optimizer.proposers)  # as if each proposer filled the pool first
            for r in PROPOSERS.get(k).planned_calls(task, splits.train, PROPOSERS.get(k).share(inst - 1)) or ()]
    if steps is not None:  # each step's pool is proposed apart
        asks = [r for sub, pool in zip(steps.subs, steps.pools) for k in dict.fromkeys(task.optimizer.proposers)
                for r in PROPOSERS.get(k).planned_calls(sub, pool, PROPOSERS.get(k).share(inst - 1)) or ()]
    rows["proposer"] = {"calls": len(asks), "prompt_tokens": sum(estimate_tokens(r)[0] for r in asks),
                        "completion_tokens": sum(r.max_tokens for r in asks)}
    per = len(task.steps or [None])  # calls per answer: one per step of a program
    mt = steps.max_tokens if steps is not None else evaluator.max_tokens  # per answer, over its calls
    sctx = SelectionContext(splits.train, seed, instruction=task.instruction,
                            budget=task.optimizer.bootstrap_examples)
    runs = [r for k in dict.fromkeys(task.optimizer.selectors) if max_demos
            for r in SELECTORS.get(k).planned_runs(sctx, max_demos)]
    typical = Candidate(task.instruction, demos, {})
    seed_c = Candidate(task.instruction, (), {})
    if steps is not None:  # the seed program's traces on bootstrap_examples training examples
        typical, seed_c = steps.typical, steps.seed
        runs = [(typical, ex) for ex in splits.train[:task.optimizer.bootstrap_examples]]
    rows["bootstrap"] = {"calls": len(runs) * per, "prompt_tokens": sum(tokens(c, [ex]) for c, ex in runs),
                         "completion_tokens": len(runs) * mt}
    scored = selection_examples(task, splits, seed)
    rows["search"] = {"calls": n_trials * len(scored) * per, "prompt_tokens": n_trials * tokens(typical, scored),
                      "completion_tokens": n_trials * len(scored) * mt}
    if task.optimizer.reflect and not task.steps:
        from .reflect import MINIBATCH, MINIBATCH_RUNS

        # each round, on a minibatch: the parent and its draft, then the merge's two members and two children
        # (upper bounds: the parent and members were scored in their trials, mostly memoised); one draft
        per_round = MINIBATCH_RUNS * min(MINIBATCH, len(scored))
        rows["search"]["calls"] += task.optimizer.reflect * (per_round + 1)
        rows["search"]["prompt_tokens"] += task.optimizer.reflect * (
            MINIBATCH_RUNS * tokens(typical, scored[:MINIBATCH]))
        rows["search"]["completion_tokens"] += task.optimizer.reflect * (per_round * mt + 120)
    # the top 3 candidates and the winner on a confirmation sample of training examples (at most as many as
    # the validation split has); under a --search-calls cap the top 3 only, and what the search leaves for them
    setup = rows["proposer"]["calls"] + rows["bootstrap"]["calls"]
    n_conf = min(len(splits.validation), len(splits.train))
    n_conf, prompts = ((n_conf, 4) if opts.search_calls is None else
                       (confirmation_size(opts.search_calls, setup, n_conf, per), CONFIRMED))
    rows["confirmation"] = {"calls": prompts * n_conf * per, "completion_tokens": prompts * n_conf * mt,
                            "prompt_tokens": prompts * tokens(typical, splits.train[:n_conf])}
    if opts.search_calls is not None:  # the search stops at the cap, less what the confirmation takes
        room = max(0, opts.search_calls - setup - confirmation_calls(n_conf, per))
        if room < rows["search"]["calls"]:
            f = room / max(1, rows["search"]["calls"])
            rows["search"] = {k: int(v * f) for k, v in rows["search"].items()}
    # seed prompt and winner on test, and the seed prompt on validation for the report (a cache hit when
    # the seed trial ran complete with generated answers)
    # (issue 25) the random k-shot baseline on test when the winner may have demos
    kshot = len(splits.test) if demos else 0
    n_report = 2 * len(splits.test) + len(splits.validation) + kshot
    rows["test"] = {"calls": n_report * per, "completion_tokens": n_report * mt,
                    "prompt_tokens": tokens(seed_c, splits.test) + (2 if kshot else 1) * tokens(typical, splits.test)
                    + tokens(seed_c, splits.validation)}
    rows["confirmation"] = rows.pop("confirmation")  # listed after the test report, as it was
    judge = _judge_row(task, evaluator, splits, rows)  # one judgment per scored answer, on the judge's LM
    total = {key: sum(r[key] for r in rows.values()) for key in ("calls", "prompt_tokens", "completion_tokens")}
    for r in list(rows.values()) + [total]:
        r["cost"] = round(cost_of(prices, r["prompt_tokens"], r["completion_tokens"]), 6) if prices else None
    if judge is not None:  # priced on the judge's profile
        rows["judge"] = judge
        task_cost = total.pop("cost")
        total = {key: total[key] + judge[key] for key in ("calls", "prompt_tokens", "completion_tokens")}
        total["cost"] = None if task_cost is None or judge["cost"] is None else round(task_cost + judge["cost"], 6)
    return {"task": task.task, "lm": profile.name, "model": profile.model, "backend": profile.backend,
            "seed": seed, "trials": n_trials, "splits": splits.sizes(), "phases": rows, "total": total,
            "prices": prices.model_dump() if prices else None,
            "limits": {k2: v for k2, v in vars(limits).items() if v is not None},
            "notes": "upper bounds: every trial sees every validation (and cross-fitted) example (pruning lowers this) and no "
                     "response is cached yet; tokens are estimated from characters (about 3 per token)"}
