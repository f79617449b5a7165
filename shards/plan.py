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
    """One ``--input FORMAT:PATH``; ``name`` is the source name used in keys and reports; ``sensor`` (optical, sar,
    infrared) is taken from ``input.sensor`` when not given."""

    fmt: str
    path: Path
    name: str
    sensor: str | None = None


@dataclass
class BuildPlan:
    inputs: list[InputSpec]
    output: Path
    cfg: BuildConfig
    dedup_against: list[Path] = field(default_factory=list)
    num_nodes: int = 1
    node_rank: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        """Give every input its sensor (its own, else ``input.sensor``) and tell the config which source has which."""
        sensors = self.cfg.input.resolve(len(self.inputs))
        for spec, sensor in zip(self.inputs, sensors):
            spec.sensor = spec.sensor or sensor
        self.cfg.input.bind({spec.name: spec.sensor for spec in self.inputs})

    def with_sensors(self, counts: dict) -> dict:
        """report.json's counts with each source's ``sensor`` in its per-source counts."""
        for spec in self.inputs:
            counts.get("sources", {}).get(spec.name, {})["sensor"] = spec.sensor
        return counts

    @property
    def work(self) -> Path:
        return self.output / WORK
