""".ci/run's environment reaches every daemon the tests start, and connet refuses an unknown
CONNET_* variable: the variables CI sets for the tests must stay outside that namespace."""

from __future__ import annotations

import re

from deploy.conftest import ROOT


def test_ci_sets_no_connet_variable() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    exported = re.findall(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=", script, re.MULTILINE)
    exported += re.findall(r"^\s*export\s+([A-Za-z_][A-Za-z0-9_]*)\s*$", script, re.MULTILINE)
    assert {"NATLAB_REQUIRED", "DEPLOY_REQUIRED", "DEPLOY_BASE_IMAGE"} <= set(exported)
    assert not [name for name in exported if name.upper().startswith("CONNET_")]
