"""Refactors keep behaviour: each case's outputs match its golden files byte for byte
(see tests/golden_runs.py for the cases and what is taken out before comparing)."""

import pytest

from golden_runs import CASES, FILES, GOLDEN, outputs


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.integration) if c == "real" else c
                                  for c in CASES])
def test_outputs_match_the_golden_files(case):
    got = outputs(case)
    for name in FILES:
        want = (GOLDEN / case / name).read_text()
        assert got[name] == want, f"{case}/{name} differs from its golden file"
