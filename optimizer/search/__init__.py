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
trials; a worker claims the lowest open slot atomically, so several processes on
one storage never run a slot twice and never lose one. Everything random about a
trial derives from ``(seed, slot)``: the sampler is re-seeded per slot
(``SlotSeededTPE``) and the validation order is seeded by the slot, so a run
killed at any moment and resumed proposes exactly what an uninterrupted run
would have.

Layout:

- ``space``    the candidate space (``SearchSpace``; a program's, ``ProgramSpace``) and its fixed first slots
- ``sampling`` the slot-seeded sampler (``SlotSeededTPE``) and slot numbering
- ``racing``   the pruners (Wilcoxon, ``PairedHalvingPruner``), the shared validation order, balanced weights
- ``storage``  storage URLs -> Optuna storages (``open_storage``), passwords redacted
- ``protocol`` how workers on one storage create, publish, check and wait for a study's setup
- ``trial``    where a trial is scored (``TrialRun``): proposal, walk, readout, record
- ``worker``   the worker loop (``Search``): claim a slot, run it, recover dead ones, results
- ``winner``   the best trial (``pick_best``) and the Pareto front
"""

from .attrs import ATTR
from .protocol import (check_setup, connect_study, ensure_slots, publish_setup, setup_startup, space_of,
                       study_setup, wait_setup)
from .racing import PairedHalvingPruner, balanced_weights, shared_validation_order
from .sampling import make_sampler, startup_trials, trial_slot
from .space import ProgramSpace, SearchSpace
from .storage import open_storage, redact_url
from .winner import pareto_front, pick_best
from .worker import Search

__all__ = ["ATTR", "PairedHalvingPruner", "ProgramSpace", "Search", "SearchSpace", "balanced_weights", "check_setup",
           "connect_study", "ensure_slots", "make_sampler", "open_storage", "pareto_front", "pick_best",
           "publish_setup", "redact_url", "setup_startup", "shared_validation_order", "space_of",
           "startup_trials", "study_setup", "trial_slot", "wait_setup"]
