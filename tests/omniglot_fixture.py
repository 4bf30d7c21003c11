"""The real Omniglot archives beside the project (../shared/data/omniglot), for the tests that
use them: `omniglot_cache` (registered in conftest) skips a test when they are absent."""

from __future__ import annotations

from pathlib import Path

import pytest

OMNIGLOT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"


@pytest.fixture(scope="module")
def omniglot_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decode of the 32,460 images shared by a module's Omniglot tests (seconds, not tens)."""
    if not (OMNIGLOT_DIR / "images_background.zip").is_file():
        pytest.skip(f"Omniglot archives not found at {OMNIGLOT_DIR}")
    return tmp_path_factory.mktemp("omniglot-cache")
