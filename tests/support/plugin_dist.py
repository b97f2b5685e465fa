"""A plugin "installed" for one daemon without pip: a module and its ``.dist-info`` (METADATA
and entry_points.txt) in a directory put first on the daemon's PYTHONPATH. importlib.metadata
finds it exactly as it finds a pip-installed distribution, so connet loads it only through
its entry point, as it would a third party's."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path


def plugin_on_path(root: Path, entry_point: str, module: str, source: str) -> dict[str, str]:
    """Write ``module`` (``source``) and a distribution whose ``connet`` entry point
    ``entry_point`` names it under ``root``; return the environment a daemon needs to see it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    dist = root / f"{module.replace('_', '-')}-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[connet]\n{entry_point} = {module}\n")
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{root}{os.pathsep}{path}" if path else str(root)}
