"""libs.server.runtime.tune_garbage_collector: what every service does once it has started."""

from __future__ import annotations

import gc

from libs.server.runtime import GC_GEN0_THRESHOLD, tune_garbage_collector


def test_startup_objects_are_frozen_and_young_collections_run_less_often() -> None:
    threshold = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_freeze_count() > 0  # modules, descriptors: no full collection walks them
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, *threshold[1:])
        assert gc.isenabled()  # cycles are still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
