"""The phases of a run, one module each, in the order ``optimizer.engine.optimize`` runs them:

- ``inputs``:  data (splits, leakage), LM backends, evaluator, every check a bad input can fail;
  then the run directory, its budget and the Optuna study;
- ``space``:   the candidate space: instruction pool (proposers) x demo pool (selectors, bootstrap);
- ``trials``:  the search: Optuna trials on the validation split (``optimizer.search.Search``);
- ``heldout``: the seed prompt and the winner scored on the held-out test split;
- ``summary``: the one summary of a finished or a stopped run, and the files that carry it.

``context.RunContext`` carries what the phases share and closes what they opened; ``options`` holds
``RunOptions`` and ``RunResult``; ``plan`` projects a run's spend without a call (``optimize --dry-run``).
"""
