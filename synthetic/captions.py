"""Caption grammar: sentences that are true of what a scene's painter put in it, in the plain style of the
UCM/Sydney caption sets, five of them an image (Karpathy form)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthetic.painters import Scene

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
PLACES = {"airport": "an airport", "parking": "a parking lot", "harbor": "a harbor", "tanks": "some storage tanks",
          "residential": "a residential area", "highway": "a road", "farmland": "farmland", "forest": "a forest"}


def amount(rng: np.random.Generator, n: int, noun: str, plural: str | None = None) -> str:
    """How annotators write counts: "a plane", "three planes", "many planes"."""
    plural = plural or noun + "s"
    if n == 1:
        return ("an " if noun[0] in "aeiou" else "a ") + noun
    if n <= 10:
        return f"{NUMBER_WORDS[n]} {plural}"
    return f"{rng.choice(['many', 'lots of', 'a lot of', 'a large number of'])} {plural}"


def be(n: int) -> str:
    return "is" if n == 1 else "are"


@dataclass
class Said:
    """What captions may say about a scene: its object counts and facts, and ``a(n, noun)`` for counts."""

    scene: Scene
    rng: np.random.Generator

    def __getattr__(self, name: str) -> int:
        classes = {"planes": "plane", "ships": "ship", "tanks": "storage-tank", "cars": "small-vehicle",
                   "trucks": "large-vehicle", "piers": "harbor", "houses": "building", "pools": "swimming-pool"}
        if name not in classes:
            raise AttributeError(name)
        return self.scene.count(classes[name])

    def a(self, n: int, noun: str) -> str:
        return amount(self.rng, n, noun)

    def fact(self, key: str, default=None):
        return self.scene.facts.get(key, default)


def airport_sentences(x: Said) -> list[str]:
    n = x.planes
    s = [f"{x.a(n, 'plane')} {be(n)} parked at the airport", f"there {be(n)} {x.a(n, 'airplane')} on the apron",
         f"{x.a(n, 'white plane')} {be(n)} stopped on the gray ground of the airport",
         f"an airport with {x.a(n, 'plane')} and some yellow lines on the ground", "a piece of green grass lies beside the apron"]
    s += ["a single plane is parked on the open apron"] if n == 1 else ["several planes are parked in different directions"]
    vehicles = x.cars + x.trucks
    return s + ([f"{x.a(vehicles, 'vehicle')} {be(vehicles)} parked beside the planes"] if vehicles else [])


def parking_sentences(x: Said) -> list[str]:
    cars, trucks = x.cars, x.trucks
    s = [f"{x.a(cars, 'car')} {be(cars)} parked in the parking lot",
         f"a parking lot with {x.a(cars, 'car')}" + (f" and {x.a(trucks, 'truck')}" if trucks else ""),
         "white lines divide the parking lot into parking spaces", "the parking lot is surrounded by green grass"]
    s += ["many cars are parked neatly in rows"] if cars > 10 else ["only one car is parked in the large parking lot"] if cars == 1 else []
    s += ["some parking spaces are empty"] if x.fact("free_slots", 0) > 0 else []
    return s + ([f"{x.a(trucks, 'truck')} {be(trucks)} parked at the side of the parking lot"] if trucks else [])


def harbor_sentences(x: Said) -> list[str]:
    ships, piers, moving, houses = x.ships, x.piers, x.fact("moving_ships", 0), x.houses
    s = [f"{x.a(ships, 'ship')} {be(ships)} in the harbor", f"there {be(ships)} {x.a(ships, 'boat')} on the dark blue water",
         "a harbor beside the sea", "the water in the harbor is calm"]
    s += [f"{x.a(piers, 'pier')} {be(piers)} extending into the water"] if piers else []
    s += ["some ships are docked at the piers"] if piers and ships - moving > 1 else []
    s += [f"{x.a(moving, 'ship')} {be(moving)} sailing on the sea with white waves behind"] if moving else []
    return s + ([f"{x.a(houses, 'warehouse')} {be(houses)} built on the shore"] if houses else [])


def tanks_sentences(x: Said) -> list[str]:
    tanks, trucks = x.tanks, x.trucks
    s = [f"there {be(tanks)} {x.a(tanks, 'white storage tank')} on the bare land",
         f"{x.a(tanks, 'round tank')} {be(tanks)} standing in an industrial area",
         f"an oil depot with {x.a(tanks, 'storage tank')}", f"the {'storage tanks are' if tanks > 1 else 'storage tank is'} built on a concrete ground"]
    s += [f"{x.a(tanks, 'storage tank')} {be(tanks)} arranged neatly in rows"] if tanks > 3 else []
    s += ["a road passes by the storage tanks" if tanks > 1 else "a road passes by the storage tank"] if x.fact("road") else []
    return s + ([f"{x.a(trucks, 'truck')} {be(trucks)} on the road near the tanks"] if trucks else [])


def residential_sentences(x: Said) -> list[str]:
    houses, cars, pools = x.houses, x.cars, x.pools
    s = [f"{x.a(houses, 'house')} {be(houses)} built along the road", "a residential area with houses and green trees",
         "many houses are arranged neatly along the road" if houses > 10 else "some houses are scattered along the road",
         "a road goes through this residential area", "some green trees are planted around the houses"]
    s += [f"{x.a(cars, 'car')} {be(cars)} driving on the road"] if cars else []
    s += [f"{x.a(pools, 'swimming pool')} {be(pools)} next to the houses"] if pools else []
    return s + (["this is a dense residential area"] if houses > 14 else [])


def highway_sentences(x: Said) -> list[str]:
    cars, trucks = x.cars, x.trucks
    n = cars + trucks
    s = [f"a straight road with {x.a(n, 'vehicle')} on it", "white lines separate the lanes of the road",
         f"a road with {NUMBER_WORDS[min(x.fact('lanes', 2), 10)]} lanes",
         "the road goes across the green field" if x.fact("grass") else "the road passes through the bare land"]
    s += [f"{x.a(cars, 'car')} {be(cars)} driving on the road"] if cars else []
    s += [f"{x.a(trucks, 'truck')} and {x.a(cars, 'car')} are running on the highway"] if trucks and cars else []
    return s + (["the traffic on this road is heavy"] if n > 10 else ["there are few vehicles on the road"] if n <= 3 else [])


def farmland_sentences(x: Said) -> list[str]:
    s = ["there is a piece of farmland", "many pieces of farmland are arranged neatly", "the fields are green and yellow",
         "some farmland with different crops", "it is a piece of cropland"]
    s += [f"{x.a(x.houses, 'house')} {be(x.houses)} beside the farmland"] if x.houses else []
    s += ["a road goes across the fields"] if x.fact("road") else []
    water = x.fact("water")
    return s + ([{"river": "a river flows past the fields", "pond": "a pond lies next to the fields"}[water]] if water else [])


def forest_sentences(x: Said) -> list[str]:
    s = ["a dense forest with many green trees", "there is a large piece of forest", "the trees are dark green and close to each other",
         "it is a piece of forest"]
    s += ["a road passes through the forest"] if x.fact("road") else []
    water = x.fact("water")
    s += [{"river": "a river runs through the forest", "pond": "there is a pond in the forest"}[water]] if water else []
    return s + ([f"{x.a(x.houses, 'house')} {be(x.houses)} in the forest"] if x.houses else [])


SENTENCES = {
    "airport": airport_sentences, "parking": parking_sentences, "harbor": harbor_sentences, "tanks": tanks_sentences,
    "residential": residential_sentences, "highway": highway_sentences, "farmland": farmland_sentences, "forest": forest_sentences,
}


def caption_candidates(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Sentences that are true of what was painted, in the plain style of UCM/Sydney captions."""
    place = PLACES[scene.kind]
    generic = [f"this is an aerial image of {place}", f"it is a remote sensing image of {place}", f"here is a top view of {place}"]
    return SENTENCES[scene.kind](Said(scene, rng)) + generic


def pick_captions(scene: Scene, rng: np.random.Generator, k: int = 5) -> list[str]:
    """Five different sentences, capitalised and ending in " ." like the Karpathy caption files."""
    unique = list(dict.fromkeys(caption_candidates(scene, rng)))
    chosen = [unique[i] for i in sorted(rng.choice(len(unique), k, replace=False))]
    return [c[0].upper() + c[1:] + " ." for c in chosen]
