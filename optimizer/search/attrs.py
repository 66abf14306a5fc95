"""The study and trial attributes this package owns in the Optuna storage: every key starts with ``ATTR``
(``ATTR + "slot"``, ``"setup"``, ``"space"``, ``"ready"``, ``"record"``, ``"readout"``, ``"offsets"``, ...)."""

ATTR = "optimizer:"
