"""Where the study is driven: one Optuna trial = one candidate scored on validation examples.

Search space: instruction (index into the instruction pool), demo set (index
into the demo pool) and number of demos (a prefix of the set). Each trial walks
the validation examples in a seeded per-trial order and reports every
example's score under the example's index, so that Optuna's ``WilcoxonPruner``
compares it *paired* with the best trial on the same examples and stops it as
soon as it is significantly worse (racing). Trials that survive have seen the
whole validation split; their mean is the objective. Pruned trials keep their
partial mean as a user attribute. With ``racing: halving`` every trial walks
one shared order instead (label-stratified for classification) and
``PairedHalvingPruner`` runs successive halving on it: at rungs of
min_examples * rate**j examples a trial goes on only when its mean is among
the best 1/rate of all trials' means on the same examples.

Slots: the study holds exactly ``n_trials`` slots, enqueued up front as WAITING
trials (slot 0 is the seed prompt, or with ``start: demos`` or ``knn`` slot 0 is the seed
instruction with demos and slot 1 the seed prompt; ``demos+knn`` runs both start trials, then the
seed prompt as slot 2). A worker claims the lowest open slot
atomically (WAITING -> RUNNING is a compare-and-set in every Optuna storage), so
several processes on one storage (PostgreSQL, MySQL, a journal file, Redis)
never run a slot twice and never lose one. Everything random about a trial
derives from ``(seed, slot)``: the sampler is re-seeded per slot
(``SlotSeededTPE``) and the validation order is seeded by the slot, so a run
killed at any moment and resumed proposes exactly what an uninterrupted run
would have. A trial whose process died (RUNNING with no heartbeat, or any
RUNNING trial in a run directory we hold the lock of) is marked FAIL and its
slot re-enqueued with the same parameters.

Failures: calls that fail after the backend's retries are counted per trial and
not reported (never scored 0). A trial with more than ``max_failure_rate`` of
its validation examples failed is marked FAIL in the study and its slot is
retried; a slot that fails ``max_slot_attempts`` times stops the run.

The study, the candidate space and the slots live in any Optuna storage: by
default SQLite in the run directory, else ``--storage URL`` (``sqlite:///``,
``postgresql://``, ``mysql://``, ``journal:PATH`` / ``*.log`` for a journal file,
``redis://`` for a Redis journal).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import json
import math
import random
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import optuna
from optuna.trial import TrialState

from ..data import Example, proportional_order
from ..errors import ConfigError, StorageError
from ..evaluate import Evaluator
from ..lm.base import LMCallFailed
from ..program import Candidate
from ..scoring import BATCH, LABEL_READOUTS, offsets_from_json, offsets_to_json

ATTR = "optimizer:"  # prefix of the study and trial attributes this module owns
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class SearchSpace:
    instructions: list[tuple[str, str]]  # (text, origin)
    demo_sets: list[tuple[str, list[Example]]]  # (selector, ordered examples)
    max_demos: int
    scorings: list[str] = dataclasses.field(default_factory=lambda: ["generate"])
    orders: int = 1  # demo orders tried per demo prefix: 0 = as selected, k > 0 = a permutation seeded by k
    # the first trial, which every later one races against: "seed" (the seed prompt) or "demos" (the seed
    # instruction with the first fixed demo set's first start_demos demos; the seed prompt then runs as slot 1)
    # or "knn" (the same with each input's start_demos nearest pool demos, when a kNN pool is among the sets)
    # or "demos+knn" (both: the fixed set first, the kNN pool second, then the seed prompt)
    start: str = "seed"
    start_demos: int | None = None  # None: max_demos (studies described before this field started with 4)
    # label readouts read jointly: a trial scores its prompt under every scoring from the same responses and
    # keeps the better one (no scoring parameter); only when every scoring is a label readout
    joint: bool = False

    @property
    def joint_readouts(self) -> bool:
        return self.joint and len(self.scorings) > 1 and all(s in LABEL_READOUTS for s in self.scorings)

    def candidate(self, instruction: int, demo_set: int, n_demos: int, scoring: str | None = None,
                  order: int = 0) -> Candidate:
        text, origin = self.instructions[instruction]
        demos: tuple[Example, ...] = ()
        selector = None
        knn = 0
        if n_demos > 0 and self.demo_sets:
            selector, exs = self.demo_sets[demo_set]
            if selector == "knn":  # the set is a pool: each input gets its n_demos nearest demos
                demos, knn, order = tuple(exs), min(n_demos, len(exs)), 0
            else:
                demos = tuple(exs[:n_demos])
            if order and len(demos) > 1:
                perm = list(demos)
                random.Random(f"order:{order}:{len(perm)}").shuffle(perm)
                demos = tuple(perm)
        scoring = scoring or self.scorings[0]
        return Candidate(text, demos, {"instruction": instruction, "instruction_origin": origin,
                                       "demo_set": demo_set if demos else None, "demo_selector": selector,
                                       "n_demos": knn or len(demos), "order": order if len(demos) > 1 else 0,
                                       "scoring": scoring}, scoring=scoring, knn=knn)

    def of_params(self, p: dict[str, Any], readout: str | None = None) -> Candidate:
        """The candidate of a trial's parameters (``readout``: the scoring a joint-readout trial kept)."""
        return self.candidate(p["instruction"], p.get("demo_set", 0), p.get("n_demos", 0),
                              readout or p.get("scoring"), p.get("order", 0))

    def of_trial(self, t: optuna.trial.FrozenTrial) -> Candidate:
        cand = self.of_params(t.params, t.user_attrs.get(ATTR + "readout"))
        offsets = t.user_attrs.get(ATTR + "offsets")
        return dataclasses.replace(cand, offsets=offsets_from_json(offsets)) if offsets else cand

    def describe(self) -> dict[str, Any]:
        return {"instructions": [{"index": i, "origin": o, "text": t} for i, (t, o) in enumerate(self.instructions)],
                "demo_sets": [{"index": i, "selector": s, "ids": [e.id for e in exs]}
                              for i, (s, exs) in enumerate(self.demo_sets)],
                "max_demos": self.max_demos, "scorings": list(self.scorings), "orders": self.orders,
                "start": self.start, "start_demos": self.start_demos or self.max_demos, "joint": self.joint}

    @property
    def has_demos(self) -> bool:
        return bool(self.demo_sets) and self.max_demos > 0

    def seed_params(self) -> dict[str, Any]:
        """The seed prompt: instruction 0, no demos, the first scoring (always slot 0)."""
        p: dict[str, Any] = {"instruction": 0}
        if self.has_demos:
            p.update(demo_set=0, n_demos=0)
        if len(self.scorings) > 1 and not self.joint_readouts:
            p["scoring"] = self.scorings[0]
        if self.has_demos and self.orders > 1:
            p["order"] = 0
        return p

    def start_params(self, start: str | None = None) -> dict[str, Any] | None:
        """A strong first incumbent for small models: the seed instruction with ``start_demos`` demos
        (default: max_demos, the whole set) of the first fixed (non-kNN) demo set (None: there is
        none). Racing prunes later trials against the first complete one, so a weak first trial (a
        zero-shot seed that a base model cannot answer) costs a whole validation pass and prunes
        nothing; and such a model gains most from more demos (SST-2, embedded model, the same random
        set on 100 validation sentences: 0.85 with its first 4 demos, 0.89 with all 8). ``start: knn``
        takes the kNN pool instead, when there is one (``start`` names either; default: this space's)."""
        if not self.has_demos:
            return None
        fixed = next((i for i, (sel, exs) in enumerate(self.demo_sets) if sel != "knn" and exs), None)
        if (start or self.start) == "knn":  # per-input demos (the kNN pool) when there is one
            fixed = next((i for i, (sel, exs) in enumerate(self.demo_sets) if sel == "knn" and exs), fixed)
        if fixed is None:
            return None
        return {**self.seed_params(), "demo_set": fixed,
                "n_demos": min(self.start_demos or self.max_demos, self.max_demos, len(self.demo_sets[fixed][1]))}

    def fixed_params(self, slot: int) -> dict[str, Any] | None:
        """The parameters of a slot that is not left to the sampler (None: the sampler proposes): the
        ``start`` trials (``demos+knn``: the first fixed set, then the kNN pool), then the seed prompt."""
        order: list[dict[str, Any]] = []
        for p in (self.start_params(k) for k in ([] if self.start == "seed" else self.start.split("+"))):
            if p is not None and p not in order:  # no kNN pool: one start trial, not the same one twice
                order.append(p)
        order.append(self.seed_params())
        return order[slot] if slot < len(order) else None

    def early_slots(self) -> int:
        """How many of the first fixed slots can run while the pool still holds placeholders (the empty
        sets of an LM-calling selector, ``selectors.demo_pool(later=True)``): those whose candidate does
        not use one and would not change once they are filled (the first fixed set is the first non-empty
        non-kNN set, so a placeholder before it would take its place)."""
        pending = [i for i, (_, exs) in enumerate(self.demo_sets) if not exs]
        n = 0
        while (p := self.fixed_params(n)) is not None:
            d, k = p.get("demo_set", 0), p.get("n_demos", 0)
            if k and (d in pending or (self.demo_sets[d][0] != "knn" and any(i < d for i in pending))):
                break
            n += 1
        return n

    @classmethod
    def from_description(cls, d: dict[str, Any], train: list[Example], *, where: str = "study") -> "SearchSpace":
        by_id = {e.id: e for e in train}
        sets = []
        for s in d["demo_sets"]:
            missing = [i for i in s["ids"] if i not in by_id]
            if missing:
                raise ConfigError(f"the {where} was built from other training data (example {missing[0]} is unknown)",
                                  field="--study", fix="use the same task and data as the study, or a new --study")
            sets.append((s["selector"], [by_id[i] for i in s["ids"]]))
        return cls([(i["text"], i["origin"]) for i in d["instructions"]], sets, int(d["max_demos"]),
                   list(d.get("scorings") or ["generate"]), int(d.get("orders", 1)), str(d.get("start", "seed")),
                   int(d.get("start_demos", 4)), bool(d.get("joint", False)))


# ------------------------------------------------------------------------- sampler

def slot_seed(seed: int, slot: int) -> int:
    return int(hashlib.sha256(f"{seed}:slot:{slot}".encode()).hexdigest()[:8], 16)


def trial_slot(t: Any) -> int:
    attrs = t.user_attrs if hasattr(t, "user_attrs") else {}
    return int(attrs.get(ATTR + "slot", t.number))


class SlotSeededTPE(optuna.samplers.TPESampler):
    """TPE whose random state is re-seeded from (seed, slot) before every trial.

    Optuna samplers keep their RNG in memory, so a resumed process would draw
    different parameters than an uninterrupted one. Re-seeding per slot makes a
    trial's proposal a function of the seed, the slot and the finished trials only."""

    def __init__(self, *, seed: int, **kwargs: Any):
        super().__init__(seed=seed, **kwargs)
        self._base_seed = seed

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        s = slot_seed(self._base_seed, trial_slot(trial))
        self._rng.rng.seed(s)
        self._random_sampler._rng.rng.seed(s)
        super().before_trial(study, trial)

    def _sample(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict) -> dict:
        # TPE orders its observations by trial number; a slot re-run after a crash has a new number,
        # so it sees the history in slot order, numbered by slot, as an uninterrupted run would
        return super()._sample(_SlotView(study), _renumbered(trial), search_space)


def _renumbered(t: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    if trial_slot(t) == t.number:
        return t
    c = copy.copy(t)
    c.number = trial_slot(t)
    return c


class _SlotView:
    """A study seen in slot order, its trials numbered by slot (for the sampler and the pruner)."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, *args: Any, **kwargs: Any) -> list[optuna.trial.FrozenTrial]:
        trials = self._study._get_trials(*args, **kwargs)
        return [_renumbered(t) for t in sorted(trials, key=lambda t: (trial_slot(t), t.number))]

    def get_trials(self, *args: Any, **kwargs: Any) -> list[optuna.trial.FrozenTrial]:
        trials = self._study.get_trials(*args, **kwargs)
        return [_renumbered(t) for t in sorted(trials, key=lambda t: (trial_slot(t), t.number))]

    @property
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.get_trials()

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial:
        """Ties go to the earlier slot (storages break ties by insertion order, which a resume changes)."""
        complete = self._study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise ValueError("no trial is completed yet")
        return max(complete, key=lambda t: (t.value, -trial_slot(t), -t.number))


class SlotStablePruner(optuna.pruners.BasePruner):
    """Wraps a pruner so that "the best trial" it compares with does not depend on trial numbers."""

    def __init__(self, inner: optuna.pruners.BasePruner):
        self.inner = inner

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return self.inner.prune(_SlotView(study), trial)  # type: ignore[arg-type]


def startup_trials(n_trials: int) -> int:
    """How many trials TPE draws at random before it models the finished ones, unless the task pins it
    (``optimizer.startup_trials``): a quarter of the trials, at least 4. A run capped by ``--search-calls``
    may end before the startup does, so its search is then a seeded random search; sizing the startup to
    what the cap affords instead (4 in every capped run of the compare harness) scored lower on held-out
    data there (experiments/results/compare, rows ours@small-model-startup4)."""
    return max(4, n_trials // 4)


def make_sampler(seed: int, n_startup: int) -> SlotSeededTPE:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SlotSeededTPE(seed=seed, multivariate=True, n_startup_trials=n_startup)


class PairedHalvingPruner(optuna.pruners.BasePruner):
    """Successive halving on shared examples (asynchronous, as in ASHA), paired.

    Every trial walks the validation split in the same order and reports example ``k`` of that order at
    step ``k``, so two trials that reached step ``r`` were scored on the same ``r`` examples. At each rung
    ``r = min_examples * rate**j`` the trial's mean over its first ``r`` examples is ranked against the
    means of every other trial on those same examples; it goes on only when it is among the best
    ``ceil(m / rate)`` of the ``m`` trials there (ties go on). Losers cost ``min_examples`` calls, and the
    examples past each rung go only to contenders."""

    def __init__(self, min_examples: int, rate: int = 2):
        self.min_examples = max(1, int(min_examples))
        self.rate = max(2, int(rate))

    def rung(self, r: int) -> bool:
        k = self.min_examples
        while k < r:
            k *= self.rate
        return k == r

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        mine = trial.intermediate_values  # a failed call leaves its step out: compare on the steps reported
        r = len(mine)
        if not self.rung(r):
            return False
        means = [sum(mine.values()) / r]
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
            if t.number == trial.number:
                continue
            vals = t.intermediate_values
            if all(k in vals for k in mine):
                means.append(sum(vals[k] for k in mine) / r)
        keep = max(1, math.ceil(len(means) / self.rate))
        threshold = sorted(means, reverse=True)[keep - 1]
        return means[0] < threshold - 1e-12


def shared_validation_order(validation: list[Example], seed: int, *, stratify: bool = False) -> list[int]:
    """The one order in which every trial of a halving study walks the validation split (seeded).

    With ``stratify`` (classification), each label's examples are shuffled and interleaved so that every
    prefix holds each label in about its share of the split: a rung compares trials on the first r
    examples, and a prefix that happens to be mostly one label would favour the candidates that answer
    that label and cut the rest."""
    if not stratify:
        order = list(range(len(validation)))
        random.Random(f"{seed}:validation").shuffle(order)
        return order
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(validation):
        groups.setdefault(e.output, []).append(i)
    for label, idx in groups.items():
        random.Random(f"{seed}:validation:{label}").shuffle(idx)
    flat = [(label, i) for label, idx in groups.items() for i in idx]
    return [flat[j][1] for j in proportional_order([label for label, _ in flat])]


def balanced_weights(validation: list[Example]) -> list[float]:
    """Per-example weights whose weighted mean is the label-balanced mean: an example of label y weighs
    n / (K * n_y) (n examples, K labels present), so each label's examples carry 1/K of the total and the
    weights average 1 over the split."""
    counts = collections.Counter(e.output for e in validation)
    n, k = len(validation), len(counts)
    return [n / (k * counts[e.output]) for e in validation]


def make_pruner(prune: bool, prune_p: float, min_examples: int, racing: str = "wilcoxon",
                rate: int = 2) -> optuna.pruners.BasePruner:
    if not prune:
        return optuna.pruners.NopPruner()
    if racing == "halving":
        return SlotStablePruner(PairedHalvingPruner(min_examples, rate))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SlotStablePruner(optuna.pruners.WilcoxonPruner(p_threshold=prune_p, n_startup_steps=min_examples))


# ------------------------------------------------------------------------- storage

def redact_url(url: str) -> str:
    """The URL without its password (for messages, run directories and summaries)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<storage URL>"
    if parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


def _scrub(text: str, url: str) -> str:
    try:
        pw = urlsplit(url).password
    except ValueError:
        pw = None
    text = text.replace(url, redact_url(url))
    return text.replace(pw, "***") if pw else text


def _storage_error(url: str, exc: BaseException | str) -> StorageError:
    msg = exc if isinstance(exc, str) else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    msg = _scrub(str(msg), url)[:200]
    return StorageError(f"cannot open study storage {redact_url(url)}: {msg}", field="--storage",
                        fix="check the URL (sqlite:///FILE, postgresql://USER@HOST/DB, journal:FILE, "
                            "redis://HOST:PORT) and that the server is running and reachable")


def storage_kind(url: str) -> str:
    if url.startswith(("redis://", "rediss://", "unix://")):
        return "redis"
    if url.startswith("journal:") or (url.endswith((".log", ".journal")) and "://" not in url):
        return "journal"
    if "://" in url:
        return "rdb"
    raise StorageError(f"not a storage URL: {url!r}", field="--storage",
                       fix="use sqlite:///FILE, postgresql://USER@HOST/DB, journal:FILE or redis://HOST:PORT")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for a URL; any failure to connect is one StorageError (password redacted)."""
    kind = storage_kind(url)
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

    if kind == "journal":
        rest = url[len("journal:"):] if url.startswith("journal:") else url
        path = Path(rest[2:] if rest.startswith("//") else rest)  # journal:///abs/file or journal:rel/file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except Exception as exc:
            raise _storage_error(url, exc) from None
    if kind == "redis":
        from urllib.parse import parse_qsl, urlencode

        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        prefix = query.pop("prefix", "")  # redis://HOST:PORT/DB?prefix=NAME keeps studies apart in one database
        plain = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
        try:
            import redis

            client = redis.Redis.from_url(plain, socket_connect_timeout=5, socket_timeout=10)
            client.ping()
            client.close()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return JournalStorage(JournalRedisBackend(plain, prefix=prefix))
        except ImportError:
            raise StorageError("Redis storage needs the `redis` package", field="--storage",
                               fix="pip install redis") from None
        except Exception as exc:
            raise _storage_error(url, exc) from None
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    given = url
    if url.startswith(("postgresql", "postgres")):
        engine_kwargs["connect_args"] = {"connect_timeout": 5}
        url = _postgres_driver(url)
    last: BaseException | None = None
    for attempt in range(4):  # several workers creating the schema at once race; the loser retries
        try:
            storage = RDBStorage(url, engine_kwargs=engine_kwargs)
            if url.startswith("sqlite"):
                _sqlite_wal(storage)
            return storage
        except Exception as exc:
            last = exc
            text = str(exc).lower()
            if any(s in text for s in ("connection refused", "could not connect", "could not translate",
                                       "does not exist", "unable to open", "timeout", "password", "no such",
                                       "authentication", "can't load plugin", "no module named")):
                break
            time.sleep(0.5 + attempt)
    msg = last if last is not None else "unknown error"
    if isinstance(msg, BaseException):
        msg = _scrub((str(msg).strip().splitlines() or [type(msg).__name__])[0], url)
    raise _storage_error(given, msg) from None


def _postgres_driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when that is what is installed."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if "+" in scheme or not sep:
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    if importlib.util.find_spec("psycopg") is None:
        raise StorageError("PostgreSQL storage needs a driver (psycopg2 or psycopg)", field="--storage",
                           fix="pip install 'prompt-optimizer[distributed]' (psycopg2-binary)")
    return f"postgresql+psycopg://{rest}"


def _sqlite_wal(storage: Any) -> None:
    """WAL journal, no fsync per commit: a trial reports every example, and a commit that waits for the
    disk costs ~10 ms. A killed process (SIGKILL included) loses nothing in WAL mode; only a power cut
    can drop the last commits, which a resume then redoes from the response cache."""
    from sqlalchemy import event

    def on_connect(dbapi_con, _record):
        cur = dbapi_con.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()


def connect_study(storage: optuna.storages.BaseStorage, name: str, seed: int, n_trials: int, *, prune: bool,
                  prune_p: float, min_examples: int, url: str = "", racing: str = "wilcoxon",
                  halving_rate: int = 2) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists. Returns (study, created_by_us); creation is atomic."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = make_sampler(seed, startup_trials(n_trials))
    pruner = make_pruner(prune, prune_p, min_examples, racing, halving_rate)
    try:
        try:
            study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                        pruner=pruner, load_if_exists=False)
            return study, True
        except optuna.exceptions.DuplicatedStudyError:
            pass
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except (StorageError, ConfigError):
        raise
    except Exception as exc:
        raise _storage_error(url or "storage", exc) from None
    setup = study.user_attrs.get(ATTR + "setup")
    if setup:
        study.sampler = make_sampler(seed, setup_startup(setup, n_trials))  # as the study was created
    return study, False


def setup_startup(setup: dict[str, Any], n_trials: int) -> int:
    """TPE's startup trials as the study's creator fixed them (studies from before that was stored: the
    quarter of their trials they used)."""
    return int(setup.get("startup_trials") or startup_trials(int(setup.get("n_trials", n_trials))))


def open_study(storage: str, name: str, seed: int, n_trials: int, *, prune: bool, prune_p: float,
               min_examples: int) -> optuna.Study:
    """Backwards-compatible: open (or create) a study from a storage URL."""
    study, _ = connect_study(open_storage(storage), name, seed, n_trials, prune=prune, prune_p=prune_p,
                             min_examples=min_examples, url=storage)
    return study


# ------------------------------------------------------------------------- study setup

def study_setup(study: optuna.Study) -> dict[str, Any] | None:
    """What the creator stored, once the study is ready (space, slots, seed), else None."""
    attrs = study._storage.get_study_user_attrs(study._study_id)
    return attrs.get(ATTR + "setup") if attrs.get(ATTR + "ready") else None


def check_setup(setup: dict[str, Any], *, task: str, seed: int, data: str) -> None:
    for key, mine in (("task", task), ("seed", seed), ("data", data)):
        if setup.get(key) != mine:
            raise ConfigError(f"the study was created with {key} {setup.get(key)!r}, this run has {mine!r}",
                              field="--study" if key != "seed" else "--seed",
                              fix="run with the same task, data and --seed as the study, or name a new --study")


def publish_setup(study: optuna.Study, space: SearchSpace, setup: dict[str, Any]) -> None:
    """Store the candidate space, enqueue the slots, then mark the study ready (creator only)."""
    study.set_user_attr(ATTR + "space", space.describe())
    ensure_slots(study, space, int(setup["n_trials"]))
    study.set_user_attr(ATTR + "setup", setup)
    study.set_user_attr(ATTR + "ready", True)


def ensure_slots(study: optuna.Study, space: SearchSpace, n_trials: int) -> int:
    """Enqueue the slots 0..n_trials-1 that have no trial yet; returns how many were added (the creator
    also calls it for the early slots alone, before the space is published)."""
    have = {trial_slot(t) for t in study.get_trials(deepcopy=False)}
    added = 0
    for k in range(n_trials):
        if k not in have:
            params = space.fixed_params(k) or {}
            study.enqueue_trial(params, user_attrs={ATTR + "slot": k})
            added += 1
    return added


def wait_setup(study: optuna.Study, *, timeout: float, poll: float = 1.0,
               on_event: Callable[..., None] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    told = False
    while True:
        setup = study_setup(study)
        if setup is not None:
            return setup
        if not told and on_event is not None:
            on_event("waiting", what="study setup by the worker that created the study")
            told = True
        if time.monotonic() > deadline:
            raise StorageError(f"study {study.study_name!r} was not set up within {timeout:.0f}s",
                               field="--study", fix="start the worker that created the study again, "
                                                    "or use a new --study name")
        time.sleep(poll)


def space_of(study: optuna.Study, train: list[Example]) -> SearchSpace:
    attrs = study._storage.get_study_user_attrs(study._study_id)
    return SearchSpace.from_description(attrs[ATTR + "space"], train)


# ------------------------------------------------------------------------- the search

class _Heartbeat:
    """Writes a timestamp on the running trial every ``interval`` seconds (shared storages)."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int, interval: float):
        self.storage = storage
        self.trial_id = trial_id
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.set_trial_system_attr(self.trial_id, ATTR + "hb", time.time())
            except Exception:
                return  # finished or storage gone: nothing to keep alive

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)


class Search:
    """Runs the study's open slots against an Evaluator and records them."""

    def __init__(self, study: optuna.Study, space: SearchSpace, evaluator: Evaluator, validation: list[Example],
                 *, seed: int, on_event: Callable[..., None] | None = None,
                 trial_log: Callable[[dict[str, Any]], None] | None = None, exclusive: bool = True,
                 worker_id: str | None = None, max_failure_rate: float = 0.1, max_slot_attempts: int = 3,
                 heartbeat: float = 5.0, grace: float = 60.0, poll: float = 1.0, call_cap: int | None = None,
                 shared_order: bool = False, stratify: bool = False, readout_after: int = 16,
                 weights: list[float] | None = None, n_validation: int | None = None):
        self.study = study
        self.storage = study._storage
        self.space = space
        self.evaluator = evaluator
        self.validation = validation
        self.seed = seed
        self.on_event = on_event or (lambda *a, **k: None)
        self.trial_log = trial_log or (lambda rec: None)
        self.exclusive = exclusive  # we hold the run directory's lock: no other process runs this study
        self.worker_id = worker_id or uuid.uuid4().hex
        self.max_failure_rate = max_failure_rate
        self.max_slot_attempts = max_slot_attempts
        self.heartbeat = heartbeat
        self.grace = grace
        self.poll = poll
        self.call_cap = call_cap  # LM calls all trials together may make (None: no cap)
        # halving: every trial walks validation in one order (label-stratified with ``stratify``) and reports
        # example k of it at step k; else each trial has its own order and reports an example under its
        # index (Wilcoxon pairs by index)
        self.shared_order = (shared_validation_order(validation, seed, stratify=stratify) if shared_order
                             else None)
        self.readout_after = max(1, readout_after)  # examples that choose a joint-readout trial's readout
        # each validation example's weight in what a trial reports (the balanced objective); None: all 1
        self.weights = weights
        # ``validation`` is what trials are scored on: the validation split first, then (cross-fitting,
        # ``optimizer.crossfit``) training examples; a record's ``val_mean`` is the split's part alone
        self.n_validation = len(validation) if n_validation is None else n_validation
        self.capped = False  # the cap was reached: no further trial starts
        self.candidates: dict[int, Candidate] = {}
        self.ran = 0  # trials this process finished (any state)
        self._recovered = False

    # -- one trial ---------------------------------------------------------------------
    def _weight(self, idx: int) -> float:
        return 1.0 if self.weights is None else self.weights[idx]

    def _suggest(self, trial: optuna.Trial) -> Candidate:
        i = trial.suggest_int("instruction", 0, len(self.space.instructions) - 1)
        d = k = o = 0
        if self.space.has_demos:
            d = trial.suggest_int("demo_set", 0, len(self.space.demo_sets) - 1)
            k = trial.suggest_int("n_demos", 0, self.space.max_demos)
            if self.space.orders > 1:  # always suggested (no conditional space); ignored below 2 demos
                o = trial.suggest_int("order", 0, self.space.orders - 1)
        sc = (trial.suggest_categorical("scoring", self.space.scorings)
              if len(self.space.scorings) > 1 and not self.space.joint_readouts else None)
        return self.space.candidate(i, d, k, sc, o)

    def _objective(self, trial: optuna.Trial, slot: int) -> tuple[dict[str, Any], float]:
        cand = self._suggest(trial)
        # joint readouts: the same responses scored under every label readout; the first readout_after
        # examples choose the one the trial reports (racing cannot prune before them), and a trial that
        # completes keeps the readout with the best mean over the whole split
        # batch calibration needs the whole split's label scores first: read once the trial completes
        joint = self.space.joint_readouts
        readouts = [cand] + ([dataclasses.replace(cand, scoring=sc, origin={**cand.origin, "scoring": sc})
                              for sc in self.space.scorings if sc != cand.scoring and sc != BATCH]
                             if joint else [])
        per: dict[str, list[float]] = {c.scoring: [] for c in readouts}
        chosen = cand.scoring if len(readouts) == 1 else None
        steps: list[int] = []  # the step of each scored example
        scored: list[int] = []  # its index in the validation split
        reported = 0  # of them, how many went to the trial (under the chosen readout)
        self.candidates[trial.number] = cand
        if self.shared_order is not None:
            order = self.shared_order
        else:
            order = list(range(len(self.validation)))
            random.Random(f"{self.seed}:trial:{slot}").shuffle(order)
        usage0 = self.evaluator.backend.usage
        t0 = time.perf_counter()
        parse_failures = failed = attempted = 0
        allowed = math.floor(self.max_failure_rate * len(order))
        last_error = None
        pruned = too_many = False
        spent_before = self.spent_calls() if self.call_cap is not None else 0
        self.on_event("trial_start", number=trial.number, slot=slot, params=trial.params)
        gen = self.evaluator.stream(cand, [self.validation[i] for i in order], tolerate_failures=True)
        try:
            for pos, (idx, out) in enumerate(zip(order, gen)):
                attempted += 1
                if out.failed:
                    failed += 1
                    last_error = out.error
                    if failed > allowed:
                        too_many = True
                        break
                    continue
                w = self._weight(idx)
                per[cand.scoring].append(out.score * w)
                for other in list(readouts[1:]):  # no LM call: the response is the one just scored
                    try:
                        per[other.scoring].append(self.evaluator.run_one(other, self.validation[idx]).score * w)
                    except LMCallFailed:  # its calibration call failed: this trial reads the first readout
                        readouts.remove(other)
                        del per[other.scoring]
                parse_failures += int(not out.parsed)
                steps.append(idx if self.shared_order is None else pos)
                scored.append(idx)
                self.on_event("example", number=trial.number)
                if chosen is None and (len(steps) >= self.readout_after or len(per) == 1):
                    chosen = _best_readout(per)
                if chosen is not None:
                    reported = _report(trial, per[chosen], steps, reported)
                    if trial.should_prune():
                        pruned = True
                        break
                if self.call_cap is not None and attempted < len(order) and \
                        spent_before + (self.evaluator.backend.usage - usage0).calls >= self.call_cap:
                    pruned = self.capped = True  # out of search budget: cut short, never the winner
                    break
        finally:
            gen.close()
        completed = not pruned and not too_many and bool(scored)
        if completed and joint and BATCH in self.space.scorings:  # no LM call: offsets off the same scores
            batch = self.evaluator.with_batch_offsets(cand, [self.validation[i] for i in scored])
            per[BATCH] = [self.evaluator.run_one(batch, self.validation[i]).score * self._weight(i) for i in scored]
            readouts.append(batch)
        if chosen is None or (completed and len(per) > 1):
            chosen = _best_readout(per, prefer=chosen)
        _report(trial, per[chosen], steps, reported)  # what a trial cut short before choosing has left
        scores = per[chosen]
        cand = next(c for c in readouts if c.scoring == chosen)
        self.candidates[trial.number] = cand
        used = self.evaluator.backend.usage - usage0
        mean = sum(scores) / len(scores) if scores else float("nan")
        state = "failed" if (too_many or not scores) else "pruned" if pruned else "complete"
        rec = {"trial": trial.number, "slot": slot, "params": dict(trial.params), "state": state,
               "score": round(mean, 6) if scores else None, "examples": len(scores), "failed_calls": failed,
               "parse_failures": parse_failures, "lm_calls": used.calls, "cache_hits": used.cache_hits,
               "retries": used.retries, "prompt_tokens": used.prompt_tokens,
               "completion_tokens": used.completion_tokens, "seconds": round(time.perf_counter() - t0, 3),
               "instruction_origin": cand.origin.get("instruction_origin"),
               "demo_selector": cand.origin.get("demo_selector"), "prompt_words": self.evaluator.prompt_tokens(cand)}
        if self.weights is not None and scores:  # the objective is weighted: the plain mean beside it (memoised)
            rec["metric_mean"] = round(sum(self.evaluator.run_one(cand, self.validation[i]).score
                                           for i in scored) / len(scored), 6)
            trial.set_user_attr("metric_mean", rec["metric_mean"])
        if self.n_validation < len(self.validation):  # cross-fitted: the validation split's plain mean beside it
            own = [self.evaluator.run_one(cand, self.validation[i]).score for i in scored if i < self.n_validation]
            rec["val_mean"] = round(sum(own) / len(own), 6) if own else None
            rec["crossfit_examples"] = len(scored) - len(own)
            if own:
                trial.set_user_attr("val_mean", rec["val_mean"])
        if len(per) > 1:
            rec["readouts"] = {k: round(sum(v) / len(v), 6) if v else None for k, v in per.items()}
            rec["readout"] = chosen
            trial.set_user_attr(ATTR + "readout", chosen)
        if cand.offsets:
            trial.set_user_attr(ATTR + "offsets", offsets_to_json(cand.offsets))
        if state == "failed":
            rec["error"] = last_error
        if self.capped and pruned:
            rec["cut_by_budget"] = True
        trial.set_user_attr("candidate_key", cand.key)
        trial.set_user_attr("examples", len(scores))
        trial.set_user_attr("failed_calls", failed)
        if scores:
            trial.set_user_attr("partial_mean", mean)
        trial.set_user_attr("prompt_words", rec["prompt_words"])
        trial.set_user_attr(ATTR + "record", rec)
        return rec, mean

    def _run_slot(self, frozen: optuna.trial.FrozenTrial) -> dict[str, Any]:
        tid = frozen._trial_id
        slot = trial_slot(frozen)
        self.storage.set_trial_system_attr(tid, ATTR + "worker", self.worker_id)
        self.storage.set_trial_system_attr(tid, ATTR + "hb", time.time())
        hb = None if self.exclusive else _Heartbeat(self.storage, tid, self.heartbeat)
        self.study._thread_local.cached_all_trials = None
        try:
            trial = optuna.Trial(self.study, tid)
            try:
                rec, mean = self._objective(trial, slot)
            except BaseException as exc:  # budget, Ctrl-C, a fatal LM or metric error: give the slot back
                self._abandon(tid, slot, frozen, trial_params=self._params(tid), reason=type(exc).__name__)
                raise
        finally:
            if hb is not None:
                hb.stop()
        if rec["state"] == "complete":
            self.study.tell(trial, mean, skip_if_finished=True)
        elif rec["state"] == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        self.ran += 1
        self.trial_log(rec)
        self.on_event("trial_end", record=rec)
        if rec["state"] == "failed":
            attempts = int(frozen.user_attrs.get(ATTR + "slot_failures", 0)) + 1
            self._enqueue(slot, rec["params"], attempts)
            if attempts >= self.max_slot_attempts:
                raise LMCallFailed(f"trial slot {slot} failed {attempts} times: more than "
                                   f"{self.max_failure_rate:.0%} of its LM calls failed after retries "
                                   f"(last: {rec.get('error')})", field="base_url",
                                   fix="check the endpoint, lower --concurrency, then run the same command "
                                       "again to continue")
        return rec

    def _params(self, trial_id: int) -> dict[str, Any]:
        try:
            return dict(self.storage.get_trial(trial_id).params)
        except Exception:
            return {}

    def _enqueue(self, slot: int, params: dict[str, Any], slot_failures: int = 0) -> None:
        params = self.space.fixed_params(slot) or params
        attrs: dict[str, Any] = {ATTR + "slot": slot}
        if slot_failures:
            attrs[ATTR + "slot_failures"] = slot_failures
        self.study.enqueue_trial(params, user_attrs=attrs)

    def _abandon(self, trial_id: int, slot: int, frozen: optuna.trial.FrozenTrial, *, trial_params: dict[str, Any],
                 reason: str) -> None:
        try:
            self.storage.set_trial_user_attr(trial_id, ATTR + "abandoned", reason)
            if self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                self._enqueue(slot, trial_params, int(frozen.user_attrs.get(ATTR + "slot_failures", 0)))
        except Exception:
            pass  # the process is going down; recovery on the next start re-enqueues the slot

    # -- slots ---------------------------------------------------------------------------
    def _recover(self) -> None:
        """Fail trials whose process died and give their slots back."""
        first = not self._recovered
        self._recovered = True
        now = time.time()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = t.system_attrs.get(ATTR + "worker")
            if self.exclusive:
                dead = first
            elif first and owner == self.worker_id:
                dead = True  # this run directory's previous process (we hold its lock now)
            else:
                hb = t.system_attrs.get(ATTR + "hb")
                if hb is None and t.datetime_start is not None:
                    hb = t.datetime_start.timestamp()
                dead = hb is not None and now - float(hb) > self.grace
            if not dead:
                continue
            try:
                self.storage.set_trial_user_attr(t._trial_id, ATTR + "abandoned", "process died")
                ok = self.storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                ok = False
            if ok:  # we won the transition: we own the replacement
                self._enqueue(trial_slot(t), dict(t.params), int(t.user_attrs.get(ATTR + "slot_failures", 0)))
                self.on_event("recovered", number=t.number, slot=trial_slot(t))
        if self.exclusive:
            self._fill_missing()

    def _fill_missing(self) -> None:
        n = self.n_trials
        trials = self.study.get_trials(deepcopy=False)
        covered = {trial_slot(t) for t in trials if t.state in FINISHED + (TrialState.RUNNING, TrialState.WAITING)}
        for k in range(n):
            if k in covered:
                continue
            failed = [t for t in trials if trial_slot(t) == k and t.state == TrialState.FAIL]
            last = max(failed, key=lambda t: t.number) if failed else None
            self._enqueue(k, dict(last.params) if last else {},
                          int(last.user_attrs.get(ATTR + "slot_failures", 0)) if last else 0)

    @property
    def n_trials(self) -> int:
        setup = self.study.user_attrs.get(ATTR + "setup") or {}
        return int(setup.get("n_trials", 0))

    def _claim(self) -> optuna.trial.FrozenTrial | None:
        trials = self.study.get_trials(deepcopy=False)
        done = {trial_slot(t) for t in trials if t.state in FINISHED}
        waiting = sorted((t for t in trials if t.state == TrialState.WAITING), key=lambda t: (trial_slot(t), t.number))
        for t in waiting:
            try:
                if not self.storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            if trial_slot(t) in done:
                # a slot re-enqueued twice by racing recoveries: it already has a result
                self.storage.set_trial_user_attr(t._trial_id, ATTR + "abandoned", "duplicate slot")
                self.storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
                continue
            return self.storage.get_trial(t._trial_id)
        return None

    def run(self, n_trials: int | None = None) -> None:
        """Run open slots until every slot of the study is finished (waiting for other workers' trials)."""
        told_waiting = False
        while True:
            self._recover()
            if self.call_cap is not None and (self.capped or self.spent_calls() >= self.call_cap):
                self.capped = True
                return
            frozen = self._claim()
            if frozen is not None:
                told_waiting = False
                self._run_slot(frozen)
                continue
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running:
                return
            if not told_waiting:
                self.on_event("waiting", what=f"{len(running)} trial(s) running in other workers")
                told_waiting = True
            time.sleep(self.poll)

    # -- results -------------------------------------------------------------------------
    def finished(self) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False) if t.state in FINISHED]

    def spent_calls(self) -> int:
        """LM calls (cache hits included) of the trials that ran to an end, in any process."""
        return sum(int(r.get("lm_calls", 0)) for r in self.records())

    def records(self) -> list[dict[str, Any]]:
        """One record per trial that ran to an end (complete, pruned, failed), in slot order."""
        recs = [t.user_attrs[ATTR + "record"] for t in self.study.get_trials(deepcopy=False)
                if ATTR + "record" in t.user_attrs and t.state.is_finished()]
        return sorted(recs, key=lambda r: (r.get("slot", r["trial"]), r["trial"]))

    def best(self, pick: str = "best") -> tuple[optuna.trial.FrozenTrial, Candidate]:
        """The winner: the highest objective (ties: the higher plain mean, then the higher mean on the
        validation split itself, then the shorter prompt, then the earlier slot); with
        ``pick="shortest"``, the shortest prompt whose mean lies within the best's 95% interval."""
        complete = [t for t in self.study.trials if t.state == TrialState.COMPLETE]
        if not complete:
            raise RuntimeError("no trial completed")
        best = pick_best(complete, pick)
        return best, self.candidate_for(best)

    def pareto(self) -> list[dict[str, Any]]:
        """Complete trials not dominated in (validation mean up, prompt words down), shortest first."""
        return pareto_front([t for t in self.study.trials if t.state == TrialState.COMPLETE])

    def candidate_for(self, trial: optuna.trial.FrozenTrial) -> Candidate:
        return self.space.of_trial(trial)


def _best_readout(per: dict[str, list[float]], prefer: str | None = None) -> str:
    """The readout with the highest mean so far (ties: ``prefer``, then the first one)."""
    names = list(per)

    def mean(n: str) -> float:
        return sum(per[n]) / len(per[n]) if per[n] else -math.inf
    return max(names, key=lambda n: (round(mean(n), 9), n == prefer, -names.index(n)))


def _report(trial: optuna.Trial, scores: list[float], steps: list[int], start: int) -> int:
    """Reports ``scores[start:]`` under their steps; returns how many are reported now."""
    for j in range(start, len(steps)):
        trial.report(scores[j], steps[j])
    return len(steps)


def _rank(t: optuna.trial.FrozenTrial) -> tuple:
    # a weighted objective's ties (prompts that each answer one label everywhere score 1/K balanced) go to
    # the higher plain mean over the same examples; a cross-fitted objective's ties (the same count right
    # over validation and training examples together) go to the higher mean on the validation split
    # itself, the score the run reports, before the shorter prompt
    plain = t.user_attrs.get("metric_mean", t.value)
    return (round(t.value, 9), round(plain, 9), round(t.user_attrs.get("val_mean", plain), 9),
            -t.user_attrs.get("prompt_words", 0), -trial_slot(t), -t.number)


def pick_best(complete: list[optuna.trial.FrozenTrial], pick: str = "best") -> optuna.trial.FrozenTrial:
    top = max(complete, key=_rank)
    if pick != "shortest":
        return top
    from ..stats import bootstrap_ci

    scores = [v for _, v in sorted(top.intermediate_values.items())]
    low = bootstrap_ci(scores, seed=0).low if scores else top.value
    within = [t for t in complete if t.value >= low - 1e-12]
    return min(within, key=lambda t: (t.user_attrs.get("prompt_words", 0), -t.value, trial_slot(t), t.number))


def pareto_front(complete: list[optuna.trial.FrozenTrial]) -> list[dict[str, Any]]:
    front: list[dict[str, Any]] = []
    best_value = -math.inf
    for t in sorted(complete, key=lambda t: (t.user_attrs.get("prompt_words", 0), -t.value, trial_slot(t))):
        if t.value > best_value:
            best_value = t.value
            front.append({"trial": t.number, "slot": trial_slot(t), "val": round(t.value, 6),
                          "prompt_words": t.user_attrs.get("prompt_words", 0), "params": dict(t.params)})
    return front


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def frozen_to_json(t: optuna.trial.FrozenTrial) -> str:
    return json.dumps({"number": t.number, "state": t.state.name, "value": _finite(t.value), "params": t.params})
