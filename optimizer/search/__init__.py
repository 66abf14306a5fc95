"""Where the study is driven (split into modules in the next commit)."""

from .worker import (ATTR, PairedHalvingPruner, Search, SearchSpace, balanced_weights, check_setup, connect_study,
                     ensure_slots, make_sampler, open_storage, pareto_front, pick_best, publish_setup, redact_url,
                     setup_startup, shared_validation_order, space_of, startup_trials, study_setup, trial_slot,
                     wait_setup)
