"""B2C captions checked against RemoteCLIP's rules on hand-made box lists."""

import random

import pytest

from shards.b2c import (
    CaptionObject,
    b2c_captions,
    caption_objects,
    count_phrase,
    display_name,
    join_phrases,
    pluralize,
)
from shards.record import ObjectAnn

W = H = 100


def obj(name, x, y):
    return CaptionObject(name, x, y)


def test_five_captions_centre_then_edge_then_counts():
    objects = [obj("plane", 50, 50), obj("plane", 45, 55), obj("small vehicle", 5, 5), obj("large vehicle", 95, 90)]
    caps = b2c_captions(objects, W, H, random.Random(0))
    assert len(caps) == 5
    assert caps[0] == "2 planes in the middle of the picture."
    # ties by name: large before small
    assert caps[1] == "A large vehicle and a small vehicle at the edge of the picture."
    for c in caps[2:]:
        assert "picture" in c or "ground" in c
        assert c[0].isupper() or c[0].isdigit()


def test_paper_example_phrasing():
    # "4 large vehicles, a small vehicle and 5 planes at the edge of the picture" (order: most frequent first)
    objects = [obj("large vehicle", 2, 2)] * 4 + [obj("small vehicle", 98, 2)] + [obj("plane", 2, 98)] * 5
    caps = b2c_captions(objects, W, H, random.Random(1))
    assert caps[1] == "5 planes, 4 large vehicles and a small vehicle at the edge of the picture."
    assert caps[0] == "There is nothing in the middle of the picture."


def test_many_above_ten_and_exactly_ten():
    eleven = [obj("small vehicle", 50, 50)] * 11
    caps = b2c_captions(eleven, W, H, random.Random(0))
    assert caps[0] == "Many small vehicles in the middle of the picture."
    for c in caps[2:]:
        assert "11" not in c and ("many" in c.lower() or "a lot of" in c.lower() or "a quantity of" in c.lower())
    ten = [obj("small vehicle", 50, 50)] * 10
    caps = b2c_captions(ten, W, H, random.Random(0))
    assert caps[0] == "10 small vehicles in the middle of the picture."
    assert all("10 small vehicles" in c for c in caps[2:])


def test_count_captions_use_different_categories_first():
    objects = [obj("plane", 10, 10), obj("ship", 20, 20), obj("storage tank", 30, 30), obj("plane", 40, 40)]
    for seed in range(20):
        caps = b2c_captions(objects, W, H, random.Random(seed))[2:]
        mentioned = {n for c in caps for n in ("plane", "ship", "storage tank") if n in c}
        assert mentioned == {"plane", "ship", "storage tank"}, caps


def test_single_category_counts_still_five_captions():
    caps = b2c_captions([obj("ship", 50, 50)], W, H, random.Random(3))
    assert len(caps) == 5
    assert caps[0] == "A ship in the middle of the picture."
    assert caps[1] == "There is nothing at the edge of the picture."
    assert all("a ship" in c.lower() for c in caps[2:])


def test_seeded_rng_is_reproducible():
    objects = [obj("plane", 10, 10), obj("ship", 60, 50), obj("harbor", 90, 10)]
    assert b2c_captions(objects, W, H, random.Random("0:key")) == b2c_captions(objects, W, H, random.Random("0:key"))


def test_centre_fraction_boundary():
    # centre region for 0.5 is [25, 75]; a centre on the border counts as central
    caps = b2c_captions([obj("plane", 25, 75), obj("ship", 24.9, 50)], W, H, random.Random(0), centre_fraction=0.5)
    assert caps[0] == "A plane in the middle of the picture."
    assert caps[1] == "A ship at the edge of the picture."


@pytest.mark.parametrize(
    "raw, shown",
    [("small-vehicle", "small vehicle"), ("golffield", "golf field"), ("storage-tank", "storage tank"),
     ("Expressway-Service-area", "expressway service area"), ("agriculture", "farmland"), ("barren", "barren land")],
)
def test_class_name_normalisation(raw, shown):
    assert display_name(raw) == shown


@pytest.mark.parametrize(
    "name, plural",
    [("plane", "planes"), ("bus", "buses"), ("small vehicle", "small vehicles"), ("chimney", "chimneys"),
     ("factory", "factories"), ("overpass", "overpasses"), ("person", "people"), ("aircraft", "aircraft"),
     ("container crane", "container cranes"), ("harbor", "harbors")],
)
def test_pluralize(name, plural):
    assert pluralize(name) == plural


def test_count_phrases_read_well():
    assert count_phrase("small vehicle", 1) == "a small vehicle"
    assert count_phrase("airplane", 1) == "an airplane"
    assert count_phrase("plane", 5) == "5 planes"
    assert count_phrase("plane", 11) == "many planes"
    assert count_phrase("water", 1) == "an area of water"
    assert count_phrase("water", 3) == "3 areas of water"
    assert join_phrases(["a", "b", "c"]) == "a, b and c"
    assert join_phrases(["a"]) == "a"


def test_caption_objects_uses_hbb_centre_and_scale():
    objs = caption_objects([ObjectAnn("small-vehicle", (10, 20, 30, 40))], scale=0.5)
    assert objs == [CaptionObject("small vehicle", 10.0, 15.0)]


def test_empty_box_list_is_an_error():
    with pytest.raises(ValueError):
        b2c_captions([], W, H, random.Random(0))
