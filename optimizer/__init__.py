"""Automated prompt optimization: `optimize task.yaml`.

Where things happen, at a glance:

- a prompt is rendered:  ``optimizer.adapters``  (CompletionAdapter / DSPy ChatAdapter)
- an LM call is made:    ``optimizer.lm.base.LMBackend.complete``  (cache + counting)
- a trial is scored:     ``optimizer.search.trial.TrialRun``  via ``optimizer.evaluate.Evaluator``
- the run is driven:     ``optimizer.engine.optimize``, its phases in ``optimizer.run``
  (inputs, space, trials, heldout, summary)
- a backend, demo selector, instruction proposer or metric is registered: ``optimizer.plugins``
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    ConfigError, DataError, LMAuthError, LMConnectionError, LMError, MetricError, OptimizerError, StorageError,
)
from .task import TaskSpec, load_task  # noqa: E402

__all__ = ["ConfigError", "DataError", "LMAuthError", "LMConnectionError", "LMError", "MetricError",
           "OptimizerError", "StorageError", "TaskSpec", "load_task", "__version__"]
