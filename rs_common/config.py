"""Typed dataclass configs that load from YAML and take command-line overrides.

Every leaf field of a config dataclass becomes a flag named by its dotted path, e.g. ``--b2c.centre-fraction
0.4`` or ``--dedup.threshold 3``; ``--config FILE.yaml`` gives the base. Precedence: dataclass defaults <
YAML < flags. Unknown keys and values of the wrong type are errors that name the key (and the YAML file),
raised before any work starts. Later stages reuse these helpers for their own configs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config value; the message names the key and where it came from."""


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise a ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: '{key}' = {value!r} does not fit {tp}")
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {value!r}")
        return from_dict(tp, value, where=where, prefix=key + ".")
    if tp in (list, tuple):  # bare `list` / `dict` annotations have no typing origin
        origin = tp
    if tp is dict:
        origin = dict
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: '{key}' must be a list, got {value!r}")
        inner = args[0] if args else Any
        if inner in (int, float):  # flags give strings; "1,5,10" and "1 5 10" both work for numbers
            value = [part for v in value for part in (v.split(",") if isinstance(v, str) else [v]) if part != ""]
        items = [_coerce(v, inner, key, where) for v in value]
        return items if origin is list else tuple(items)
    if origin is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: '{key}' must be a JSON/YAML mapping, got {value!r}") from exc
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: '{key}' must be true/false, got {value!r}")
    if tp in (int, float):
        return _number(value, tp, key, where)
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: '{key}' must be a string, got {value!r}")
        return str(value)
    if tp is Path:
        return Path(value)
    return value


# Plain decimal numbers only: Python's int()/float() also take "1_0" (= 10), "inf", "nan" and "infinity", none of
# which is ever a meaningful setting here.
_INT_TEXT = re.compile(r"[+-]?\d+")
_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _number(value: Any, tp: type, key: str, where: str) -> int | float:
    """``value`` as a finite ``tp`` (int or float), or a ConfigError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where}: '{key}' must be a number, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        pattern = _INT_TEXT if tp is int else _FLOAT_TEXT
        if not pattern.fullmatch(text) and not (tp is int and _FLOAT_TEXT.fullmatch(text)):
            raise ConfigError(f"{where}: '{key}' must be {'an integer' if tp is int else 'a finite number'}, got {value!r}")
        value = float(text) if (tp is float or not _INT_TEXT.fullmatch(text)) else int(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: '{key}' must be a finite number, got {value!r}")
    if tp is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where}: '{key}' must be an integer, got {value!r}")
        return int(value)
    return float(value)


def plain_int(text: str) -> int:
    """An argparse ``type`` for integer flags outside the config dataclasses: plain decimal only (``int()`` takes
    ``1_0`` as ten)."""
    try:
        return _number(text, int, "value", "command line")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a plain integer") from exc


def from_dict(cls: type[T], data: dict, where: str = "config", prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict; unknown keys are errors."""
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(prefix + u for u in unknown)}; "
            f"valid keys here: {', '.join(prefix + n for n in sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k, where) for k, v in data.items()}
    obj = cls(**kwargs)
    return obj


def to_dict(cfg) -> dict:
    """Plain-JSON view of a config (Paths as strings)."""

    def conv(v):
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    return conv(dataclasses.asdict(cfg))


def _leaves(cls, prefix: str = ""):
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            yield from _leaves(tp, prefix + f.name + ".")
        else:
            yield prefix + f.name, tp, f


def add_config_args(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--dotted.path`` flag per leaf field of ``cls`` (help shows the default)."""
    group = parser.add_argument_group("config overrides (any key of the YAML config)")
    defaults = to_dict(cls())
    for path, tp, f in _leaves(cls):
        if path in skip:
            continue
        default = defaults
        for part in path.split("."):
            default = default[part]
        # argparse formats help with %: a literal one ("~30% slower") must be doubled or --help prints a raw dict
        help_text = (f.metadata.get("help", "") + f" (default: {default!r})").strip().replace("%", "%%")
        extra: dict = {}
        if tp is bool:
            extra = {"nargs": "?", "const": "true"}  # a bare --local-loss means true
        elif _unwrap(tp) in (list, tuple) or typing.get_origin(_unwrap(tp)) in (list, tuple):
            # --ks 1 5 10 (or --ks 1,5,10 for numbers); a repeated flag adds to the list: --input A --input B keeps both
            extra = {"nargs": "+", "action": "extend"}
        group.add_argument(
            "--" + path.replace("_", "-"),
            dest="cfg__" + path,
            default=argparse.SUPPRESS,
            metavar=f.metadata.get("metavar") or NAME_METAVARS.get(path.rsplit(".", 1)[-1]) or _metavar(tp),
            help=help_text,
            **extra,
        )


def _unwrap(tp):
    """``X`` for ``X | None`` / ``Optional[X]``; ``tp`` otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


_METAVARS = {bool: "BOOL", int: "INT", float: "FLOAT", str: "TEXT", Path: "PATH", dict: "JSON", Any: "VALUE"}
# settings whose name says more than their type (a field's metadata "metavar" wins over both)
NAME_METAVARS = {
    "model": "NAME", "output": "DIR", "checkpoint": "PATH", "pretrained": "PATH", "resume": "PATH",
    "train_data": "SHARDS", "val_data": "SHARDS", "shards": "SHARDS", "data": "PATH", "images": "DIR",
    "captions": "JSON", "input": "FORMAT:PATH", "adapter": "DIR", "image": "FILE", "image_root": "DIR",
    "predictions": "JSONL", "deepspeed": "JSON", "fsdp_config": "JSON", "tokenizer": "DIR", "vision_tower": "DIR",
    "llava_checkpoint": "DIR", "swap_vision_tower": "DIR", "device": "DEVICE", "precision": "MODE",
}


def _metavar(tp) -> str:
    """What a flag takes, from the field's type: INT, FLOAT, TEXT, PATH, BOOL, JSON; a list shows its items' kind
    (argparse adds the ``[X ...]``)."""
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin in (list, tuple) or tp in (list, tuple):
        args = typing.get_args(tp)
        return _metavar(args[0]) if args else "VALUE"
    if origin is dict:
        return "JSON"
    return _METAVARS.get(tp, "VALUE")


def _set_path(data: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"command line: '{path}' overrides a non-mapping value")
    node[parts[-1]] = value


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(cls: type[T], yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Defaults < YAML file < ``overrides`` (dotted keys). Validates and returns the dataclass."""
    data: dict = {}
    where = "config"
    if yaml_path is not None:
        where = str(yaml_path)
        try:
            loaded = yaml.safe_load(Path(yaml_path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {yaml_path}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{yaml_path}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{yaml_path}: the top level must be a mapping of keys")
        data = loaded
    over: dict = {}
    for path, value in (overrides or {}).items():
        _set_path(over, path, value)
    if over:
        where = f"{where} + command line" if yaml_path else "command line"
    cfg = from_dict(cls, _merge(data, over), where=where)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return cfg


def make_config(cls: type[T], values: dict[str, Any] | None = None, /, **fields: Any) -> T:
    """A validated ``cls`` from Python values: the config a tool's command line would give, built in code (the
    demo calls the tools' functions this way). Keys are field names or dotted paths (``{"writer.shard_size": 100}``);
    values are coerced and checked exactly as flags are, and a bad one raises ConfigError naming the key."""
    return load_config(cls, None, {**(values or {}), **fields})


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--dotted.path`` flags the user actually gave."""
    return {k[len("cfg__"):]: v for k, v in vars(args).items() if k.startswith("cfg__")}


def config_parser(cls, description: str, config_help: str = "YAML file with any of the options below as keys (flags win)") -> argparse.ArgumentParser:
    """A parser with ``--config YAML`` and one flag per field of ``cls`` (the whole CLI of a config-only tool)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help=config_help)
    add_config_args(parser, cls)
    return parser


def parse_config(parser: argparse.ArgumentParser, cls: type[T], argv: list[str] | None = None) -> T:
    """Parse ``argv`` into a validated ``cls``; a bad value exits with status 2 and the message."""
    args = parser.parse_args(argv)
    try:
        return load_config(cls, args.config, overrides_from_args(args))
    except ConfigError as exc:
        parser.error(str(exc))


OUR_LOGGERS = ("rs_common", "shards", "clip_pretrain", "vlm_finetune", "launch", "synthetic")


def config_file_of(argv: list[str] | None) -> Path | None:
    """The ``--config`` file named in ``argv`` (the recipe a training run records), or None."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config", type=Path)
    return parser.parse_known_args(argv)[0].config


def setup_logging() -> None:
    """The command-line tools' logging: this toolkit's INFO lines on stderr, other libraries' from WARNING up
    (open_clip logs a dozen INFO lines on the root logger for every model it builds). ``RS_LOG_LEVEL=INFO`` (or
    ``DEBUG``) shows every library's lines too."""
    wanted = os.environ.get("RS_LOG_LEVEL", "").strip().upper()
    root_level = logging.getLevelName(wanted) if wanted in ("DEBUG", "INFO", "WARNING", "ERROR") else logging.WARNING
    logging.basicConfig(level=root_level, format="%(levelname)s %(name)s: %(message)s")
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(min(root_level, logging.INFO))


def run_config_tool(cls: type[T], run, argv: list[str] | None, description: str, errors: tuple = (),
                    show=lambda result: result) -> int:
    """The whole ``main`` of a config-only command-line tool: parse ``argv`` into ``cls`` (bad values exit 2 before
    any work), ``run(cfg)``, print ``show(result)`` as one JSON line; ``errors`` (and ConfigError) become a one-line
    ``error:`` message and exit status 2."""
    cfg = parse_config(config_parser(cls, description), cls, argv)
    setup_logging()
    try:
        result = run(cfg)
    except (ConfigError, *errors) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(show(result)))
    return 0
