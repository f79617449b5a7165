"""Box-to-Caption (B2C): five captions from a box list, following RemoteCLIP's rules.

RemoteCLIP (arXiv 2306.11029, Sec. 3.2) turns detection boxes into five captions per image:
  1. the objects whose box centre lies in the centre of the image,
  2. the objects that are not in the centre,
  3-5. counts of different categories, each from a randomly drawn object of the box list,
with "many" / "a lot of" instead of a number when a category is seen more than 10 times, and no size words.
The paper publishes examples but no code; the phrasing details here (templates, plural and article
rules, the centre region) are ours and stated below so a rebuild is identical and reviewable:
  - centre region: the middle box covering ``centre_fraction`` of the width and height (default 0.5,
    i.e. [W/4, 3W/4] x [H/4, 3H/4]); a box is "in the middle" when its HBB centre lies inside it;
  - categories within a caption: most frequent first, ties by name;
  - numbers are digits ("5 planes"), one object reads "a"/"an" ("a small vehicle", "an airplane"),
    uncountable land-cover classes read "an area of water" / "3 areas of water";
  - randomness comes only from the ``rng`` the caller passes (seeded by the sample key).
Pure functions: no I/O, no global state.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from shards.readers.classes import readable_class_name

# Class names that read badly as-is in a sentence (segmentation labels are often adjectives or fields).
DISPLAY_NAMES = {
    "barren": "barren land",
    "agriculture": "farmland",
    "agricultural": "farmland",
    "impervious surfaces": "impervious surface",
    "low vegetation": "low vegetation",
}

# Nouns that are not counted one by one; they read "an area of water", "3 areas of water".
MASS_NOUNS = frozenset(
    {"water", "barren land", "bare land", "farmland", "vegetation", "low vegetation", "grass", "grassland",
     "impervious surface", "sand", "snow", "soil", "cropland", "rangeland", "wetland", "ice"}
)

IRREGULAR_PLURALS = {
    "person": "people", "man": "men", "woman": "women", "child": "children", "leaf": "leaves",
    "aircraft": "aircraft", "sheep": "sheep", "fish": "fish", "deer": "deer", "people": "people",
}

CENTRE_TEMPLATE = "{} in the middle of the picture."
EDGE_TEMPLATE = "{} at the edge of the picture."
NO_CENTRE = "There is nothing in the middle of the picture."
NO_EDGE = "There is nothing at the edge of the picture."

COUNT_TEMPLATES_ONE = (
    "There is {} in the picture.",
    "{} is located in the picture.",
    "There is {} on the ground.",
)
COUNT_TEMPLATES_SOME = (
    "There are {} in the picture.",
    "{} are located in the picture.",
    "There are {} on the ground.",
)
COUNT_TEMPLATES_MANY = (
    "There are many {} in the picture.",
    "A lot of {} are located in the picture.",
    "A quantity of {} are located in the picture.",
    "Many {} are on the ground.",
)


@dataclass(frozen=True)
class CaptionObject:
    """What B2C needs of one object: its display name and HBB centre."""

    name: str
    cx: float
    cy: float


def display_name(raw_class: str) -> str:
    """'small-vehicle' -> 'small vehicle', 'golffield' -> 'golf field', 'agriculture' -> 'farmland'."""
    name = readable_class_name(raw_class)
    return DISPLAY_NAMES.get(name, name)


def pluralize(name: str) -> str:
    """Plural of a (possibly multi-word) class name: only the last word changes."""
    head, _, last = name.rpartition(" ")
    if last in IRREGULAR_PLURALS:
        plural = IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        plural = last + "es"
    elif len(last) > 1 and last.endswith("y") and last[-2] not in "aeiou":
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return f"{head} {plural}" if head else plural


def with_article(name: str) -> str:
    return ("an " if name[:1] in "aeiou" else "a ") + name


def count_phrase(name: str, count: int, many_above: int = 10, many_word: str = "many") -> str:
    """'a small vehicle', '5 planes', 'many ships', 'an area of water', '3 areas of water'."""
    if name in MASS_NOUNS:
        if count == 1:
            return f"an area of {name}"
        amount = many_word if count > many_above else str(count)
        return f"{amount} areas of {name}"
    if count == 1:
        return with_article(name)
    if count > many_above:
        return f"{many_word} {pluralize(name)}"
    return f"{count} {pluralize(name)}"


def join_phrases(phrases: Sequence[str]) -> str:
    """['a', 'b', 'c'] -> 'a, b and c'."""
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def capitalize(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def ordered_counts(names: Sequence[str]) -> list[tuple[str, int]]:
    """Category counts, most frequent first, ties by name (stable and readable)."""
    return sorted(Counter(names).items(), key=lambda kv: (-kv[1], kv[0]))


def describe(names: Sequence[str], many_above: int) -> str:
    return join_phrases([count_phrase(n, c, many_above) for n, c in ordered_counts(names)])


def is_central(obj: CaptionObject, width: float, height: float, centre_fraction: float) -> bool:
    margin_x = width * (1.0 - centre_fraction) / 2.0
    margin_y = height * (1.0 - centre_fraction) / 2.0
    return margin_x <= obj.cx <= width - margin_x and margin_y <= obj.cy <= height - margin_y


def location_captions(objects: Sequence[CaptionObject], width: float, height: float, centre_fraction: float, many_above: int) -> list[str]:
    """Captions 1 and 2: what is in the middle, and what is at the edge."""
    central = [o.name for o in objects if is_central(o, width, height, centre_fraction)]
    edge = [o.name for o in objects if not is_central(o, width, height, centre_fraction)]
    first = capitalize(CENTRE_TEMPLATE.format(describe(central, many_above))) if central else NO_CENTRE
    second = capitalize(EDGE_TEMPLATE.format(describe(edge, many_above))) if edge else NO_EDGE
    return [first, second]


def count_caption(name: str, count: int, many_above: int, rng: random.Random) -> str:
    if count > many_above:
        # the "many" templates carry the quantity word themselves
        noun = f"areas of {name}" if name in MASS_NOUNS else pluralize(name)
        return capitalize(rng.choice(COUNT_TEMPLATES_MANY).format(noun))
    templates = COUNT_TEMPLATES_ONE if count == 1 else COUNT_TEMPLATES_SOME
    return capitalize(rng.choice(templates).format(count_phrase(name, count, many_above)))


def count_captions(objects: Sequence[CaptionObject], many_above: int, rng: random.Random, n: int = 3) -> list[str]:
    """Captions 3..5: counts of different categories, each picked through a random object.

    Drawing an object (not a category) weights frequent categories more, as in the paper. A category
    already used is not drawn again while unused ones remain; with fewer categories than captions the
    same category comes back with a different sentence when one is left.
    """
    counts = Counter(o.name for o in objects)
    used: list[str] = []
    out: list[str] = []
    for _ in range(n):
        candidates = [o for o in objects if o.name not in used] or list(objects)
        name = rng.choice(candidates).name
        caption = count_caption(name, counts[name], many_above, rng)
        for _retry in range(4):
            if caption not in out:
                break
            caption = count_caption(name, counts[name], many_above, rng)
        used.append(name)
        out.append(caption)
    return out


def b2c_captions(
    objects: Sequence[CaptionObject],
    width: float,
    height: float,
    rng: random.Random,
    centre_fraction: float = 0.5,
    many_above: int = 10,
) -> list[str]:
    """The five RemoteCLIP captions of one image. ``objects`` must not be empty."""
    if not objects:
        raise ValueError("B2C needs at least one object")
    return location_captions(objects, width, height, centre_fraction, many_above) + count_captions(objects, many_above, rng)


def caption_objects(objects, scale: float = 1.0) -> list[CaptionObject]:
    """ObjectAnn list -> CaptionObject list (display names, HBB centres)."""
    return [
        CaptionObject(display_name(o.cls), (o.hbb[0] + o.hbb[2]) / 2.0 * scale, (o.hbb[1] + o.hbb[3]) / 2.0 * scale)
        for o in objects
    ]
