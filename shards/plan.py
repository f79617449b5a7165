"""What one build is asked to do: its inputs, output folder, settings and, on a cluster, its share (a
``BuildPlan``); the four passes a build runs (``STAGES``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rs_common.formats.shard_sample import WORK
from shards.build_config import BuildConfig

STAGES = ("hash", "dedup", "write", "finalize")


@dataclass
class InputSpec:
    """One ``--input FORMAT:PATH``; ``name`` is the source name used in keys and reports."""

    fmt: str
    path: Path
    name: str


@dataclass
class BuildPlan:
    inputs: list[InputSpec]
    output: Path
    cfg: BuildConfig
    dedup_against: list[Path] = field(default_factory=list)
    num_nodes: int = 1
    node_rank: int = 0
    progress: bool = True

    @property
    def work(self) -> Path:
        return self.output / WORK
