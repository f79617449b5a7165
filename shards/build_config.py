"""The shard build's settings, one dataclass per concern; all load from YAML and take CLI overrides."""

from __future__ import annotations

from dataclasses import dataclass, field

from rs_common.config import ConfigError
from rs_common.imageio import SENSORS, ImageConfig


@dataclass
class InputConfig:
    sensor: list[str] = field(
        default_factory=lambda: ["optical"],
        metadata={"help": f"what took the images: {' | '.join(SENSORS)}; one value for every --input or one per --input, "
                          "in order. Goes into each sample's json and the report; a SAR image's 16-bit/float pixels are "
                          "scaled through dB (image.sar_input, image.sar_percentiles)"},
    )

    def validate(self) -> None:
        bad = [s for s in self.sensor if s not in SENSORS]
        if bad or not self.sensor:
            raise ConfigError(f"input.sensor must be one or more of {', '.join(SENSORS)}, got {self.sensor}")

    def resolve(self, count: int) -> list[str]:
        """One sensor per input: a single value for all ``count`` inputs, else exactly one each."""
        if len(self.sensor) == 1:
            return list(self.sensor) * count
        if len(self.sensor) != count:
            raise ConfigError(f"input.sensor: give one sensor for all inputs or one per --input ({count}), got {self.sensor}")
        return list(self.sensor)

    def bind(self, sources: dict[str, str]) -> None:
        """Remember source name -> sensor (not a setting: it travels with the config to the worker processes)."""
        self._by_source = dict(sources)

    def sensor_of(self, source: str) -> str:
        by_source = getattr(self, "_by_source", None) or {}
        return by_source.get(source, self.sensor[0] if len(self.sensor) == 1 else "optical")


@dataclass
class FileConfig:
    allow_outside_root: bool = field(
        default=False,
        metadata={"help": "read images that annotations place outside the dataset root (../x.jpg, absolute paths); "
                          "refused and counted as path_outside_root by default"},
    )
    read_hidden: bool = field(
        default=False,
        metadata={"help": "read files and folders whose names start with '.' (macOS ._* copies, .ipynb_checkpoints); "
                          "counted as hidden_file by default"},
    )


@dataclass
class ClassConfig:
    aliases: dict = field(
        default_factory=dict,
        metadata={"help": "raw class name -> name to use, applied by every reader (e.g. {plane: airplane})"},
    )
    extra: list[str] = field(
        default_factory=list,
        metadata={"help": "class names accepted in addition to a format's known list (DOTA, DIOR); others are unknown_class"},
    )
    check_known: bool = field(default=True, metadata={"help": "drop (and count) objects whose class is not in the format's known list"})


@dataclass
class B2CConfig:
    centre_fraction: float = field(
        default=0.5, metadata={"help": "a box whose centre lies in the middle box of this fraction of width/height is 'in the middle'"}
    )
    many_above: int = field(default=10, metadata={"help": "counts above this read 'many' / 'a lot of'"})
    seed: int = field(default=0, metadata={"help": "seed of the caption RNG (per sample it is mixed with the sample key)"})
    sensor_templates: dict = field(
        default_factory=dict,
        metadata={"help": "sensor -> template wrapped around each B2C caption of that sensor's images, e.g. "
                          "{sar: 'a SAR image with {caption}'} ({caption} = the caption, its first letter lowered unless "
                          "it starts the template; {sensor} = SAR / infrared / optical). Empty = captions unchanged"},
    )

    def validate(self) -> None:
        for sensor, template in self.sensor_templates.items():
            if sensor not in SENSORS or not isinstance(template, str) or "{caption}" not in template:
                raise ConfigError(f"b2c.sensor_templates: want {{sensor: template with '{{caption}}'}} for sensors in "
                                  f"{', '.join(SENSORS)}, got {sensor!r}: {template!r}")
        if not 0.0 < self.centre_fraction <= 1.0:
            raise ConfigError(f"b2c.centre_fraction must be in (0, 1], got {self.centre_fraction}")
        if self.many_above < 1:
            raise ConfigError(f"b2c.many_above must be >= 1, got {self.many_above}")


@dataclass
class BoxConfig:
    min_size: float = field(default=1.0, metadata={"help": "boxes narrower or lower than this (pixels, after clipping) are dropped as degenerate"})
    clip: bool = field(default=True, metadata={"help": "clip boxes that leave the image (counted); false drops them"})
    drop_difficult: bool = field(default=False, metadata={"help": "drop objects flagged difficult (DOTA/VOC)"})

    def validate(self) -> None:
        if self.min_size < 0:
            raise ConfigError(f"boxes.min_size must be >= 0, got {self.min_size}")


@dataclass
class MaskConfig:
    classes: dict = field(
        default_factory=dict,
        metadata={"help": "mask value -> class name: {2: building} for index masks, {'255,0,0': car} for RGB palettes; empty = LoveDA's map"},
    )
    ignore: list[str] = field(default_factory=lambda: ["background", "clutter", "no-data"], metadata={"help": "class names never boxed"})
    min_area: int = field(default=64, metadata={"help": "contours with a box smaller than this many pixels are dropped"})

    def validate(self) -> None:
        if self.min_area < 0:
            raise ConfigError(f"masks.min_area must be >= 0, got {self.min_area}")


@dataclass
class CaptionSetConfig:
    train_splits: list[str] = field(default_factory=lambda: ["train", "val"], metadata={"help": "splits of caption sets that go into training shards"})
    eval_splits: list[str] = field(default_factory=lambda: ["test"], metadata={"help": "splits of a caption json used by --dedup-against"})


@dataclass
class FolderConfig:
    templates: list[str] = field(
        default_factory=lambda: [
            "a satellite photo of {}.",
            "an aerial image of {}.",
            "a remote sensing image of {}.",
            "a top-down view of {}.",
            "an overhead photo of {}.",
        ],
        metadata={"help": "caption templates for scene-class folders ({} = class name); five give five captions"},
    )

    def validate(self) -> None:
        for t in self.templates:
            if "{}" not in t:
                raise ConfigError(f"folders.templates: template {t!r} has no '{{}}' for the class name")


@dataclass
class DedupConfig:
    threshold: int = field(default=2, metadata={"help": "Hamming distance <= this is a duplicate (RemoteCLIP code: <= 2)"})
    segments: int = field(default=4, metadata={"help": "multi-index segments of the 64-bit pHash (exact for threshold < segments)"})
    within: bool = field(default=True, metadata={"help": "remove near-duplicates inside the training data"})
    hash_side: int = field(
        default=128,
        metadata={"help": "box-reduce images to a shorter side of hash_side..2*hash_side-1 px before pHash (0 = hash the full image, imagehash exactly; slower)"},
    )

    def validate(self) -> None:
        if not 0 <= self.threshold <= 32:
            raise ConfigError(f"dedup.threshold must be in 0..32, got {self.threshold}")
        if self.hash_side and self.hash_side < 32:
            raise ConfigError(f"dedup.hash_side must be 0 or >= 32 (the pHash grid), got {self.hash_side}")
        if self.segments not in (1, 2, 4, 8):
            raise ConfigError(f"dedup.segments must divide 64 into whole bytes (1, 2, 4 or 8), got {self.segments}")


@dataclass
class TileConfig:
    size: int = field(
        default=0,
        metadata={"help": "cut detection and mask scenes with a side over this many pixels into size x size tiles, one sample "
                          "each, DOTA_devkit's way (0 = off: only scenes over image.max_pixels are tiled, see too_large)"},
    )
    overlap: int = field(default=200, metadata={"help": "pixels shared by neighbouring tiles (tiles step size - overlap; DOTA_devkit's gap)"})
    min_visible: float = field(
        default=0.7, metadata={"help": "an object is kept in a tile when at least this share of its area is inside (DOTA_devkit's thresh)"}
    )
    too_large: str = field(
        default="tile",
        metadata={"help": "detection and mask scenes over image.max_pixels: 'tile' them (at tile.size, or too_large_size when "
                          "tile.size is 0) or 'skip' them as too_large"},
    )
    too_large_size: int = field(default=1024, metadata={"help": "tile size for scenes over image.max_pixels when tile.size is 0"})

    def validate(self) -> None:
        if self.size < 0 or self.too_large_size < 1:
            raise ConfigError(f"tile.size must be >= 0 and tile.too_large_size >= 1, got {self.size} and {self.too_large_size}")
        for size in (self.size, self.too_large_size):
            if size and not 0 <= self.overlap < size:
                raise ConfigError(f"tile.overlap must be in 0..{size - 1} (below the tile size {size}), got {self.overlap}")
        if not 0.0 < self.min_visible <= 1.0:
            raise ConfigError(f"tile.min_visible must be in (0, 1], got {self.min_visible}")
        if self.too_large not in ("tile", "skip"):
            raise ConfigError(f"tile.too_large must be 'tile' or 'skip', got {self.too_large!r}")


@dataclass
class WriterConfig:
    shard_size: int = field(default=1000, metadata={"help": "samples per tar shard"})
    keep_work: bool = field(default=False, metadata={"help": "keep the staged parts under OUTPUT/_work after a build"})

    def validate(self) -> None:
        if self.shard_size < 1:
            raise ConfigError(f"writer.shard_size must be >= 1, got {self.shard_size}")


@dataclass
class ReportConfig:
    grid_samples: int = field(default=24, metadata={"help": "sample images shown in report.html"})
    max_pairs: int = field(default=24, metadata={"help": "duplicate/contamination pairs shown in report.html"})

    def validate(self) -> None:
        for name in ("grid_samples", "max_pairs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"report.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class BuildConfig:
    workers: int = field(default=2, metadata={"help": "worker processes that decode/hash/encode (0 = in the main process)"})
    seed: int = field(default=0, metadata={"help": "seed for everything random in the build"})
    strict: bool = field(default=False, metadata={"help": "stop at the first bad sample or annotation instead of skipping it"})
    image: ImageConfig = field(default_factory=ImageConfig)
    input: InputConfig = field(default_factory=InputConfig)
    files: FileConfig = field(default_factory=FileConfig)
    boxes: BoxConfig = field(default_factory=BoxConfig)
    classes: ClassConfig = field(default_factory=ClassConfig)
    b2c: B2CConfig = field(default_factory=B2CConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    captions: CaptionSetConfig = field(default_factory=CaptionSetConfig)
    folders: FolderConfig = field(default_factory=FolderConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tile: TileConfig = field(default_factory=TileConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def validate(self) -> None:
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        for section in (self.image, self.input, self.boxes, self.b2c, self.masks, self.folders, self.dedup, self.tile, self.writer, self.report):
            section.validate()
