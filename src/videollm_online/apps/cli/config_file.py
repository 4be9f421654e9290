"""`--config FILE.yaml` and `--print-config`: a command's options kept in a YAML file, the command line on top.

The file's keys are the options' config fields (`--max-new-tokens` is `max_new_tokens`), as `--print-config`
writes them. Each value goes through the same parser as the option's value on the command line, so a file cannot
set what the command line would refuse; the file's values become the command's defaults, which the options given
on the command line then override.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ...utils.errors import UserError
from .options import Parser


def add_config_options(parser: Parser) -> None:
    group = parser.add_argument_group("config file")
    group.add_argument(
        "--config",
        type=Path,
        metavar="FILE.yaml",
        help="read the options from this YAML file (the keys --print-config writes); options given on the "
        "command line override the file's",
    )
    group.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved options as YAML (a file for --config) and exit",
    )


def apply_config_file(parser: Parser, path: Path) -> None:
    """Make the file's values `parser`'s defaults. Unknown keys and values of the wrong type are one error line
    naming the key and the file."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"--config {path}: {getattr(error, 'strerror', None) or error}") from error
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserError(f"--config {path}: not YAML ({' '.join(str(error).split())})") from error
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise UserError(f"--config {path}: expected a mapping of option names to values, got {type(values).__name__}")
    defaults = {}
    for key, value in values.items():
        if key not in parser.fields:
            raise UserError(
                f"--config {path}: unknown key {key!r}; the keys of {parser.prog}: {', '.join(parser.fields)}"
            )
        try:
            defaults[key] = parsed_value(parser, key, value)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as error:
            raise UserError(f"--config {path}: {key}: {error}") from error
    parser.set_defaults(**defaults)


def parsed_value(parser: Parser, key: str, value: Any) -> Any:
    """A file's value for config field `key`, checked as the command line checks the option's value."""
    action = next(action for action in parser._actions if action.dest == key)
    if value is None:
        if action.default is None or key in parser.required_fields:
            return None
        raise ValueError(f"needs a value (default: {action.default})")
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if isinstance(action, argparse._AppendAction):
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {value!r}")
        return [one_value(action, item) for item in value]
    return one_value(action, value)


def one_value(action: argparse.Action, value: Any) -> Any:
    if isinstance(value, (dict, list)) or (isinstance(value, bool) and action.type not in (None, str)):
        raise ValueError(f"expected a single value, got {value!r}")
    parsed = action.type(str(value)) if action.type else str(value)
    if action.choices is not None and parsed not in action.choices:
        raise ValueError(f"{parsed!r} is not one of {', '.join(map(str, action.choices))}")
    return parsed


def print_config(parser: Parser, args: argparse.Namespace) -> None:
    """The resolved options, one YAML key per config field, in the order `--help` lists them."""
    import yaml

    values = {key: plain(getattr(args, key)) for key in parser.fields}
    print(yaml.safe_dump(values, sort_keys=False, allow_unicode=True), end="")


def plain(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value
