from __future__ import annotations

import numpy as np
import pytest

from pipeline.synthetic import ANIMALS, SCENE_CLASSES, animal_batch, draw_animal, draw_scene


def test_animal_batch_is_balanced_and_seeded():
    images, labels = animal_batch(np.random.default_rng(0), 32, 24)
    assert images.shape == (32, 24, 24, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    assert np.bincount(labels, minlength=len(tuple(ANIMALS))).tolist() == [4] * 8
    again = animal_batch(np.random.default_rng(0), 32, 24)
    np.testing.assert_array_equal(images, again[0])
    np.testing.assert_array_equal(labels, again[1])


def test_source_and_target_tasks_share_no_class():
    assert not set(tuple(ANIMALS)) & set(SCENE_CLASSES)


@pytest.mark.parametrize("cls", tuple(ANIMALS))
def test_every_animal_draws(cls):
    img = draw_animal(np.random.default_rng(1), cls, 40)
    assert img.size == (40, 40) and img.mode == "RGB"
    assert np.asarray(img).std() > 5  # not a blank image


def test_unknown_animal_is_refused():
    with pytest.raises(ValueError, match="unknown animal"):
        draw_animal(np.random.default_rng(1), "hexagon", 40)


@pytest.mark.parametrize("cls", SCENE_CLASSES)
def test_every_scene_class_draws(cls):
    img = draw_scene(np.random.default_rng(2), cls, 90, 60)
    assert img.size == (90, 60) and img.mode == "RGB"


def test_characters_change_the_picture():
    """The same background with and without the characters differs where they are drawn."""
    a = np.asarray(draw_scene(np.random.default_rng(3), "tom_jerry_0", 120, 90), dtype=int)
    b = np.asarray(draw_scene(np.random.default_rng(3), "tom_jerry_1", 120, 90), dtype=int)
    assert a.shape == b.shape and np.abs(a - b).mean() > 5
