"""Every error the library raises on purpose.

The hierarchy, in one place (httpx style)::

    OptimizerError                  base: one line, names file, field and fix
    ├── ConfigError                 task.yaml / LM profile / CLI option is wrong
    ├── DataError                   data file missing, unreadable, column or label wrong
    ├── MetricError                 unknown metric, or a user metric that raises
    ├── LMError                     an LM backend failed
    │   ├── LMCallFailed            one call lost after its retries (the trial counts it)
    │   ├── LMConnectionError       endpoint unreachable
    │   └── LMAuthError             credentials refused
    ├── StorageError                study storage cannot be opened
    ├── BudgetExceeded              a call would pass --max-calls, --max-tokens or --max-cost
    └── ParityError                 an export does not reproduce the optimizer's prompts or scores

    RetryableError                  internal: a backend's transient failure, retried by LMBackend;
                                    never leaves the library (its ``final`` LMError does, once retries
                                    are spent)

The CLI turns any of these into one line on stderr and exit status 2; the
library itself never prints. ``str(err)`` is that line.
"""

from __future__ import annotations


class OptimizerError(Exception):
    """Base of all expected failures.

    ``file``: the file at fault (task, profile, data file, ...) or None.
    ``field``: the dotted key inside it (``dataset.files.train``) or None.
    ``fix``: one sentence telling the user what to do.
    """

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
        self.field = field
        self.fix = fix

    def __str__(self) -> str:  # one line, always
        where = ": ".join(p for p in (self.file, self.field) if p)
        text = f"{where}: {self.message}" if where else self.message
        if self.fix:
            text += f" (fix: {self.fix})"
        return " ".join(text.split())


class ConfigError(OptimizerError):
    """A task file, LM profile, preset or option is invalid."""


class DataError(OptimizerError):
    """A data file is missing or unreadable, or a column/label is wrong."""


class MetricError(OptimizerError):
    """A metric is unknown, cannot be imported, or raised while scoring."""


class LMError(OptimizerError):
    """An LM backend failed after its retries."""


class LMCallFailed(LMError):
    """One call failed after its retries (rate limit, server error, timeout, dropped or malformed response).

    Not fatal by itself: the Evaluator records the example as failed and the trial
    is marked failed when too many of its calls fail."""


class LMConnectionError(LMError):
    """The endpoint could not be reached."""


class LMAuthError(LMError):
    """The endpoint refused the credentials."""


class StorageError(OptimizerError):
    """The Optuna storage could not be opened."""


class BudgetExceeded(OptimizerError):
    """A call, token or cost budget was reached (not a user error; the run stops cleanly)."""


class ParityError(OptimizerError):
    """The exported artifact does not reproduce the optimizer's prompts or scores."""


class RetryableError(Exception):
    """Raised by ``_generate`` for a transient failure; ``final`` is raised once retries are spent."""

    def __init__(self, final: LMError, *, kind: str, retry_after: float | None = None):
        super().__init__(str(final))
        self.final = final
        self.kind = kind  # rate_limit | server | timeout | dropped | malformed | connect
        self.retry_after = retry_after
