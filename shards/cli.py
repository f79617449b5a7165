"""Command line of the shard factory (``python launch/build_shards.py --help``, console script ``rs-build-shards``).

Same shape as every other tool: :func:`parse_build_command` turns the command line into one typed
:class:`BuildCommand` (the :class:`~shards.build.BuildPlan` with its validated :class:`BuildConfig`, the pass and
``--overwrite``), and :func:`run_build_command` runs it; Python callers (the demo) build a ``BuildCommand``
themselves and call the same function. The flags are hand-made here rather than from one config dataclass because
``--config`` YAML holds only the :class:`BuildConfig` (the build's settings), while ``--input``/``--output``/
``--stage`` say what to build and where.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from shards.build import STAGES, BuildPlan, InputSpec, run_build
from shards.build_config import BuildConfig
from rs_common.config import ConfigError, add_config_args, load_config, overrides_from_args, plain_int, setup_logging
from shards.readers import FORMATS

EXAMPLES = """examples:
  # DOTA + DIOR + LoveDA masks + RSICD train captions, RSICD/RSITMD test images guarded against leakage
  python launch/build_shards.py --input dota:/data/DOTA/train --input voc:/data/DIOR \\
      --input mask:/data/LoveDA/Train --input captions:/data/RSICD \\
      --dedup-against /data/RSICD/dataset_rsicd.json --dedup-against /data/RSITMD/dataset_RSITMD.json \\
      --output /data/shards/rs --workers 16

  # on a cluster: K array jobs hash, one dedups, K write, one finalizes (shared filesystem)
  python launch/build_shards.py ... --num-nodes 8 --node-rank $SLURM_ARRAY_TASK_ID --stage hash
  python launch/build_shards.py ... --num-nodes 8 --stage dedup
  python launch/build_shards.py ... --num-nodes 8 --node-rank $SLURM_ARRAY_TASK_ID --stage write
  python launch/build_shards.py ... --num-nodes 8 --stage finalize
"""


def parse_input(value: str) -> tuple[str, Path]:
    fmt, sep, path = value.partition(":")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"--input wants FORMAT:PATH (FORMAT one of {', '.join(FORMATS)}), got {value!r}")
    if fmt not in FORMATS:
        raise argparse.ArgumentTypeError(f"--input {value!r}: unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    return fmt, Path(path).expanduser()


def source_names(inputs: list[tuple[str, Path]]) -> list[InputSpec]:
    """Source name = the dataset folder's (or json's) name, made unique with -2, -3... in given order.

    Unique by construction: a suffixed name is taken only when no earlier source holds it, so ``p/a``, ``q/a``
    and ``r/a-2`` become ``a``, ``a-2`` and ``a-2-2`` (keys start with the source name, so two equal names
    would give two samples one key)."""
    specs: list[InputSpec] = []
    taken: set[str] = set()
    for fmt, path in inputs:
        base = path.stem if path.suffix else path.name
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", base).strip("_").lower() or fmt
        name, n = base, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name)
        specs.append(InputSpec(fmt, path, name))
    return specs


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="build_shards.py",
        description="Build captioned webdataset shards (RemoteCLIP-style B2C/M2B captions, p-Hash dedup) from RS datasets.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", action="append", type=parse_input, required=True, metavar="FORMAT:PATH",
                        help=f"a dataset root in its shipped layout; FORMAT one of {', '.join(FORMATS)}; repeatable")
    parser.add_argument("--output", type=Path, required=True, help="output dir for shards, manifest and reports")
    parser.add_argument("--dedup-against", action="append", type=Path, default=[], metavar="PATH",
                        help="evaluation caption json (its test split) or image folder (recursive): near-duplicates are removed from training")
    parser.add_argument("--config", type=Path, help="YAML config; any key is also a flag below")
    parser.add_argument("--workers", help="worker processes (0 = none); same as --workers in the config")
    parser.add_argument("--shard-size", help="samples per shard (writer.shard_size)")
    parser.add_argument("--num-nodes", type=plain_int, default=1, help="machines sharing the build (cluster mode)")
    parser.add_argument("--node-rank", type=plain_int, default=0, help="this machine's rank in 0..num-nodes-1")
    parser.add_argument("--stage", choices=STAGES + ("all",), default="all", help="which pass to run (default: all four)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous build in --output: removes only the files a build wrote there (a folder "
                             "holding anything else is refused)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_args(parser, BuildConfig, skip=("workers", "writer.shard_size"))
    return parser


@dataclass(frozen=True)
class BuildCommand:
    """One shard build as the command line describes it: what to build (``plan``), which pass, over what."""

    plan: BuildPlan
    stage: str = "all"
    overwrite: bool = False


def parse_build_command(argv: list[str] | None = None) -> BuildCommand:
    """The command line as a checked :class:`BuildCommand`; a bad flag, value or path exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = overrides_from_args(args)
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.shard_size is not None:
        overrides["writer.shard_size"] = args.shard_size
    try:
        cfg = load_config(BuildConfig, args.config, overrides)
    except ConfigError as exc:
        parser.error(str(exc))
    if args.num_nodes < 1 or not 0 <= args.node_rank < args.num_nodes:
        parser.error(f"--node-rank must be in 0..{args.num_nodes - 1}, got {args.node_rank}")
    if args.overwrite and args.num_nodes > 1:
        parser.error("--overwrite is for single-machine builds; clear the output dir yourself before a multi-node build")
    for _, path in args.input:
        if not path.exists():
            parser.error(f"--input path does not exist: {path}")
    for path in args.dedup_against:
        if not path.exists():
            parser.error(f"--dedup-against path does not exist: {path}")
    try:  # input.sensor: one for all inputs or one per --input
        plan = BuildPlan(
            inputs=source_names(args.input), output=args.output, cfg=cfg, dedup_against=list(args.dedup_against),
            num_nodes=args.num_nodes, node_rank=args.node_rank, progress=not args.no_progress,
        )
    except ConfigError as exc:
        parser.error(str(exc))
    return BuildCommand(plan, args.stage, args.overwrite)


def run_build_command(cmd: BuildCommand) -> int:
    """Run the build; print the counts as one JSON line and where the report is. Exit status: 0 done, 2 an error
    (one ``error:`` line), 130 interrupted (SIGTERM too: finished passes are kept, the same command resumes)."""
    setup_logging()
    output = cmd.plan.output
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # schedulers send SIGTERM before killing
    try:
        report = run_build(cmd.plan, stage=cmd.stage, overwrite=cmd.overwrite)
    except (OSError, ValueError, RuntimeError) as exc:  # LayoutError, AnnotationError, OverlapError, OutputBusyError...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: finished passes in {output / '_work'} are kept; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if report is not None:
        summary = {k: report[k] for k in ("read", "written", "skipped", "duplicates", "contaminated", "shards")}
        if report["scenes"]["tiled"]:  # the counts above are samples: whole images and tiles
            summary["scenes"] = {k: report["scenes"][k] for k in ("read", "whole", "tiled", "skipped")}
        print(json.dumps(summary))
        print(f"report: {output / 'report.html'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_build_command(parse_build_command(argv))


if __name__ == "__main__":
    sys.exit(main())
