"""``optimize bench``: score several candidate prompts on the same examples, with statistics.

Candidates (``--candidates``, each optionally ``NAME=SPEC``):

- a run directory: its winner; ``RUN_DIR#baseline`` is its seed prompt;
- an export of ``optimize export`` (``yaml``, ``dspy``, ``completion``, ``openai-chat``), or any
  saved DSPy program JSON: read back into instruction + demos, and checked to render to the same
  prompt;
- a candidates file (YAML or JSON)::

      candidates:
        - name: weak
          instruction: Say positive.
          demos:                       # field values, or example ids of the task's data ("train:12")
            - {sentence: a fine film, sentiment: positive}

  (a single mapping with ``instruction`` is one candidate; a top-level list works too).

Every candidate is scored by ``optimizer.evaluate.Evaluator`` on the same examples of one split
(paired); with sampled decoding (profile ``temperature`` > 0) each example is answered
``--repeats`` times (distinct ``sample`` indices, so distinct cache keys) and its score is the mean
of the repeats. For each candidate: mean, 95% percentile-bootstrap interval, the paired difference
to the first candidate with its bootstrap interval and a p-value (exact McNemar on discordant
pairs for 0/1 scores with one repeat, paired bootstrap otherwise), prompt and completion tokens per
call (the backend's own counts), latency per call (wall time of uncached calls; where the LM cache
answered most calls, up to ``timing_calls`` calls per candidate are re-made without the cache and
timed) and cost per 1000 calls when the profile has ``prices``.

The bench directory (``BenchOptions.out``; by default ``RUNS_DIR/bench-<task>-<hash of the
configuration>`` with ``BenchOptions.runs_dir`` as ``RUNS_DIR``, ``experiments/runs`` for the CLI,
so the same command finds it again) holds ``bench.json`` (configuration and results, per-example
scores included), ``results.jsonl`` (one line per call, appended as it goes), ``table.md``,
``table.csv`` and ``status.json``. A bench that stops is resumed by running the same command:
finished calls are read back from ``results.jsonl`` and the LM cache answers repeated prompts.

Layout: reading ``--candidates`` in ``_candidates``, the run (calls appended to the bench directory,
``rundir.BenchDir``) in ``_run``, the statistics in ``_summary``, the tables in ``_table``; prompts are
rendered and scored by ``optimizer.rendering.renderer``.
"""

from __future__ import annotations

from ..rendering import SampleEvaluator, renderer
from ._candidates import BenchCandidate, candidate_from_template, load_candidates
from ._run import SPLITS, BenchOptions, BenchResult, run_bench
from ._summary import summarize
from ._table import caption, table_rows, to_csv, to_markdown, to_rich

__all__ = ["SPLITS", "BenchCandidate", "BenchOptions", "BenchResult", "SampleEvaluator", "candidate_from_template",
           "caption", "load_candidates", "renderer", "run_bench", "summarize", "table_rows", "to_csv", "to_markdown",
           "to_rich"]
