"""The daemon's collector settings: startup objects frozen, young objects collected less often."""

import gc

from streamer.gc_tuning import YOUNG_THRESHOLD, tune_for_service


def test_tuning_freezes_startup_objects_and_raises_the_young_threshold():
    before = gc.get_threshold()
    try:
        tune_for_service()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
