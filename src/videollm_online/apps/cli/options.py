"""Command-line options derived from typed configs: a dataclass field becomes an option whose help is the field's
docstring and whose default is the field's default.

`transformers.HfArgumentParser` turns a field's type into argparse's type, choices and default (its
`_parse_dataclass_field`); `add_fields` adds what a command needs on top: a subset of the fields, a command-line
name where it differs from the field's, a stricter value type (`positive_int`, `fps_value`, ...), and a flag for a
yes/no field. The option's destination is always the field's name, so `build` makes the config back from the
parsed arguments in one way for every command.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import functools
import inspect
import math
import textwrap
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers import HfArgumentParser

from ...utils.errors import UserError

EXIT_USER_ERROR = 2


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; an option shown as `--a-b` only, not also as its `--a_b` twin."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = [option for option in action.option_strings if "_" not in option]
        if shown and len(shown) < len(action.option_strings):
            action = copy.copy(action)
            action.option_strings = shown
        return super()._format_action_invocation(action)


class Parser(HfArgumentParser):
    """An argument parser whose usage errors are one line, like every other error of the command. `fields` holds,
    per destination, the config field an option was made from (the keys a `--config` file may set)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(None, **kwargs)
        self.fields: dict[str, dataclasses.Field] = {}
        self.required_fields: list[str] = []

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def check_required(self, args: argparse.Namespace) -> None:
        """Required config fields are checked after a `--config` file had its say, not by argparse."""
        missing = [self.flag(name) for name in self.required_fields if getattr(args, name, None) is None]
        if missing:
            self.error(f"the following arguments are required: {', '.join(missing)}")

    def flag(self, dest: str) -> str:
        """How usage names the option of `dest` (its first spelling)."""
        return next(action.option_strings[0] for action in self._actions if action.dest == dest)


FIELD_DEFAULT = object()
"""An option's default is its field's."""


@dataclass(frozen=True)
class Option:
    """How a config field appears on the command line, where it is not simply `--field-name` with the field's type,
    default and docstring."""

    flags: tuple[str, ...] = ()
    """Option strings instead of `--field-name`."""
    positional: bool = False
    """A positional argument (a required field: the thing the command works on) rather than an option."""
    type: Callable[[str], Any] | None = None
    """The value's parser (an argparse type) instead of the field's type."""
    help: str | None = None
    """Help where the field's docstring speaks of the library rather than the command line."""
    metavar: str | None = None
    """The value's name in `--help`."""
    choices: tuple[str, ...] | None = None
    """The values the option takes."""
    repeat: bool = False
    """The option may be given again, each value added to a list."""
    default: Any = FIELD_DEFAULT
    """A command's default where it differs from the field's (e.g. a value the config leaves to the model)."""


ARGUMENT = Option(positional=True)
"""A positional argument with the field's type and docstring."""


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (the string literal right after its annotation), one line."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for statement, following in zip(body, body[1:]):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def add_fields(
    parser: Parser,
    cls: type,
    names: dict[str, Option | None] | list[str],
    group: argparse._ActionsContainer | None = None,
) -> None:
    """Add the named fields of dataclass `cls` to `parser` (or one of its argument groups) as options."""
    specs = names if isinstance(names, dict) else dict.fromkeys(names)
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    for name, spec in specs.items():
        help_text = (spec and spec.help) or field_docs(cls).get(name)
        if not help_text:
            raise TypeError(f"{cls.__name__}.{name} has no docstring to be its option's help")
        add_field(parser, group or parser, fields[name], hints[name], help_text, spec or Option())


def add_field(
    parser: Parser,
    target: argparse._ActionsContainer,
    field: dataclasses.Field,
    hint: Any,
    help_text: str,
    spec: Option,
) -> None:
    name = field.name
    if spec.positional:
        target.add_argument(name, type=spec.type or _plain(hint), help=help_text, metavar=spec.metavar)
        return
    default = field.default if spec.default is FIELD_DEFAULT else spec.default
    if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    if default is dataclasses.MISSING:  # required: checked once a --config file had its say
        parser.required_fields.append(name)
        default = None
    flags = spec.flags or (f"--{name.replace('_', '-')}",)
    kwargs: dict[str, Any] = {"help": with_default(help_text, default), "dest": name, "default": default}
    if spec.metavar:
        kwargs["metavar"] = spec.metavar
    if hint is bool:  # a yes/no field: the flag says the other way than the default
        target.add_argument(*spellings(flags), action="store_false" if default is True else "store_true", **kwargs)
    elif spec.repeat:  # argparse appends to (a copy of) the default: a list, also for a tuple field
        kwargs["default"] = None if default is None else list(default)
        target.add_argument(*spellings(flags), action="append", type=spec.type or str, **kwargs)
    else:  # HfArgumentParser derives the type, choices and default from the field, and spells it `--a-b`, `--a_b`
        main = flags[0].lstrip("-").replace("-", "_")
        if spec.choices:
            kwargs["choices"] = spec.choices
        aliases = [flag for flag in flags if flag not in (f"--{main}", f"--{main.replace('_', '-')}")]
        scratch = dataclasses.field(default=default, metadata={**kwargs, "aliases": aliases})
        scratch.name, scratch.type = main, spec.type or VALUE_TYPES.get(hint, hint)
        HfArgumentParser._parse_dataclass_field(target, scratch)
        target._actions[-1].option_strings.sort(key=lambda option: "_" in option)  # usage shows the first: `--a-b`
    parser.fields[name] = field


def spellings(flags: tuple[str, ...]) -> list[str]:
    """The flags, and `--a_b` beside each `--a-b`, as HfArgumentParser spells the options it adds."""
    twins = [flag.replace("-", "_").replace("__", "--", 1) for flag in flags if flag.startswith("--")]
    return [*flags, *(twin for twin in twins if twin not in flags)]


def _plain(hint: Any) -> Any:
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return args[0] if args else hint


def with_default(help_text: str, default: Any) -> str:
    """The help with the default as `--help` shows it; none where the help says what no value means."""
    if default is None or isinstance(default, bool) or default == [] or default == ():
        return help_text
    if help_text.endswith("."):
        return f"{help_text[:-1]} (default: %(default)s)."
    return f"{help_text} (default: %(default)s)"


def build(cls: type, args: argparse.Namespace, **values: Any):
    """A config from the parsed arguments: every field an option set, then `values`; its ValueError as a user error.
    The one place where the command line becomes a typed config."""
    names = {field.name for field in dataclasses.fields(cls) if field.init}
    given = {name: getattr(args, name) for name in names if hasattr(args, name)}
    return configured(cls, **{**given, **values})


def configured(cls, **values):
    """`cls(**values)` for a typed config; the range checks of its `__post_init__` become one error line."""
    try:
        return cls(**values)
    except ValueError as error:
        raise UserError(str(error)) from error


def checked(check, *args, **kwargs):
    """Run a library check that raises ValueError (checks.check_number, ...) as a user error."""
    try:
        return check(*args, **kwargs)
    except ValueError as error:
        raise UserError(str(error)) from error


# ---------------------------------------------------------------------- value types
def query_text(value: str) -> str:
    """A question: UTF-8 text (bytes the terminal's encoding could not decode reach Python as lone surrogates, which
    no tokenizer takes), of a bounded length."""
    from ...data.schema import MAX_TEXT_CHARS

    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"{value!r} is not valid UTF-8 text: check the terminal's encoding") from None
    if len(value) > MAX_TEXT_CHARS:
        raise argparse.ArgumentTypeError(f"a question of {len(value)} characters, over the limit of {MAX_TEXT_CHARS}")
    return value


def parse_query_at(value: str) -> tuple[float, str]:
    value = query_text(value)
    seconds, sep, text = value.partition(":")
    try:
        time = float(seconds)
    except ValueError:
        time = None
    if not sep or time is None or not math.isfinite(time) or time < 0 or not text.strip():
        raise argparse.ArgumentTypeError(
            f"malformed --query-at {value!r}: expected SECONDS:TEXT with SECONDS >= 0, e.g. '12.5:What is he doing?'"
        )
    return time, text.strip()


def positive_int(value: str) -> int:
    number = whole_number(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {value!r}")
    return number


def fps_value(value: str) -> float:
    """Frames per second: finite and within checks.MIN_FPS..MAX_FPS (at 1e9 a 2 s clip became 10 GB)."""
    from ...utils.checks import MAX_FPS, MIN_FPS

    number = positive_float(value)
    if not MIN_FPS <= number <= MAX_FPS:
        raise argparse.ArgumentTypeError(f"frames per second must be in [{MIN_FPS:g}, {MAX_FPS:g}], got {value!r}")
    return number


def whole_number(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None


def real(value: str) -> float:
    """A finite float (argparse's float takes nan and inf)."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return number


def threshold_value(value: str) -> float:
    """A silence threshold, checked by the decision policy's own check."""
    from ...core.policy import check_threshold

    try:
        number = float(value)
        check_threshold(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value!r}") from None
    return number


VALUE_TYPES: dict[Any, Callable[[str], Any]] = {
    float: real,
    float | None: real,
    int: whole_number,
    int | None: whole_number,
}
"""Parsers for plain field types whose errors are clearer than argparse's (and a float takes no nan or inf)."""
