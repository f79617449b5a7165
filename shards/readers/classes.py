"""Known class lists of the detection formats, alias/unknown-class handling, and readable class names.

Readers keep class names as the dataset spells them ("small-vehicle", "golffield"), after
``classes.aliases``; ``readable_class_name`` is what captions show ("small vehicle", "golf field").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from shards.build_config import BuildConfig

DOTA_CLASSES: frozenset[str] = frozenset({
    # v1.0
    "plane", "ship", "storage-tank", "baseball-diamond", "tennis-court", "basketball-court",
    "ground-track-field", "harbor", "bridge", "large-vehicle", "small-vehicle", "helicopter",
    "roundabout", "soccer-ball-field", "swimming-pool",
    # v1.5
    "container-crane",
    # v2.0
    "airport", "helipad",
})

DIOR_CLASSES: frozenset[str] = frozenset({
    "airplane", "airport", "baseballfield", "basketballcourt", "bridge", "chimney", "dam",
    "Expressway-Service-area", "Expressway-toll-station", "golffield", "groundtrackfield", "harbor",
    "overpass", "ship", "stadium", "storagetank", "tenniscourt", "trainstation", "vehicle", "windmill",
})

VOC_CLASSES: frozenset[str] = frozenset({
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
})

HRSC_CLASSES: frozenset[str] = frozenset({"ship"})

# Class names written as one glued word (DIOR, UCM, RSICD, AID lowercased): the words they are made of.
GLUED_WORDS: Mapping[str, str] = MappingProxyType({
    "bareland": "bare land",
    "baseballdiamond": "baseball diamond",
    "baseballfield": "baseball field",
    "basketballcourt": "basketball court",
    "circularfarmland": "circular farmland",
    "commercialarea": "commercial area",
    "containercrane": "container crane",
    "denseresidential": "dense residential",
    "footballfield": "football field",
    "golfcourse": "golf course",
    "golffield": "golf field",
    "groundtrackfield": "ground track field",
    "industrialarea": "industrial area",
    "largevehicle": "large vehicle",
    "mediumresidential": "medium residential",
    "mobilehomepark": "mobile home park",
    "parkinglot": "parking lot",
    "railwaystation": "railway station",
    "rectangularfarmland": "rectangular farmland",
    "seaice": "sea ice",
    "smallvehicle": "small vehicle",
    "soccerballfield": "soccer ball field",
    "sparseresidential": "sparse residential",
    "storagetank": "storage tank",
    "storagetanks": "storage tanks",
    "swimmingpool": "swimming pool",
    "tenniscourt": "tennis court",
    "thermalpowerstation": "thermal power station",
    "trainstation": "train station",
})

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[\s_\-]+")


def readable_class_name(raw: str) -> str:
    """Class name as words: "BareLand" -> "bare land", "large_vehicle" -> "large vehicle",
    "Expressway-toll-station" -> "expressway toll station", "golffield" -> "golf field"."""
    spaced = _CAMEL_BOUNDARY.sub(" ", raw.strip())
    words = _SEPARATORS.sub(" ", spaced).strip().lower().split(" ")
    return " ".join(GLUED_WORDS.get(w, w) for w in words if w)


@dataclass(frozen=True)
class ClassPolicy:
    """How a reader turns a raw class name into the one it keeps, and which names it accepts.

    A name is known when the raw or the aliased name is in the format's list or in ``classes.extra``
    (case-insensitively), so an alias may map onto a name of another dataset ({plane: airplane}).
    """

    known: frozenset[str]
    aliases: Mapping[str, str]
    extra: frozenset[str]
    check_known: bool

    def resolve(self, raw: str) -> str:
        return str(self.aliases.get(raw, raw))

    def is_known(self, raw: str, resolved: str) -> bool:
        if not self.check_known:
            return True
        accepted = self.known | self.extra
        return raw.lower() in accepted or resolved.lower() in accepted

    def check(self, raw: str) -> tuple[str, bool]:
        """(name to keep, whether it is accepted)."""
        name = self.resolve(raw)
        return name, self.is_known(raw, name)


def class_policy(cfg: BuildConfig, known: Iterable[str] = (), check_known: bool | None = None) -> ClassPolicy:
    """The policy of a format with the ``known`` list under ``cfg.classes`` (``check_known`` overrides it)."""
    return ClassPolicy(
        known=frozenset(k.lower() for k in known),
        aliases=MappingProxyType({str(k): str(v) for k, v in cfg.classes.aliases.items()}),
        extra=frozenset(str(e).lower() for e in cfg.classes.extra),
        check_known=cfg.classes.check_known if check_known is None else check_known,
    )


def unknown_class_message(raw: str) -> str:
    return f"unknown class {raw!r} (add it to classes.extra or classes.aliases)"
