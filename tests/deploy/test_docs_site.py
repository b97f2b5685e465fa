"""The documentation site (mkdocs.yml, Material theme, over docs/): it builds with --strict,
which mkdocs.yml makes fail on a broken link, a broken anchor or a page missing from the nav."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from deploy.conftest import ROOT, require


def test_the_site_builds_strictly_with_every_page_in_the_nav(tmp_path: Path) -> None:
    missing = [name for name in ("mkdocs", "material") if importlib.util.find_spec(name) is None]
    require(f"{' and '.join(missing)} missing (pip install '.[docs]')" if missing else None)
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for page in (ROOT / "docs").glob("*.md"):
        built = site / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        assert built.is_file(), f"{page.name} was not built"
    assert "WARNING" not in result.stderr, result.stderr
