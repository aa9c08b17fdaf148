"""The image tests need the built image: `make test-image` (which .ci/run calls after `make
test`) builds it and runs them; other runs leave them out (deselected, not skipped: they
are run, just elsewhere)."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("TIKET_TEST_IMAGE"):
        return
    needs_image = [item for item in items if item.get_closest_marker("image")]
    if needs_image:
        config.hook.pytest_deselected(items=needs_image)
        items[:] = [item for item in items if not item.get_closest_marker("image")]
