"""Writing files so that a crash never leaves half of one: write beside the target, then rename over it."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import UserError


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; when the block ends without error, it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data: Any, indent: int | None = 2, strict: bool = False) -> None:
    """`data` as UTF-8 JSON. Text that UTF-8 cannot hold (a lone surrogate from undecodable command-line bytes) is
    written escaped (`\\udcff`) rather than failing; `strict`: NaN and infinities are a ValueError, not written."""
    text = json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=not strict)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, indent=indent, ensure_ascii=True, allow_nan=not strict)
    write_text_atomic(path, text + "\n")


def report_json(data: Any, path: str | Path | None = None, indent: int = 1) -> None:
    """Print a result as JSON, and write it atomically to `path` when one is given (the benchmarks' `--output`)."""
    print(json.dumps(data, indent=indent, ensure_ascii=False))
    if path:
        write_json_atomic(path, data, indent=indent)


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Rows as JSON lines, written atomically."""
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_with(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Let `write(tmp_path)` produce the file (e.g. safetensors' save_file), then swap it in."""
    with atomic_path(path) as tmp:
        write(tmp)


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"no such file: {path}")
    if not path.is_file():
        raise UserError(f"{path} is a directory, not a JSONL file")
    rows = []
    with open(path, encoding="utf-8") as file:
        try:
            for number, line in enumerate(file, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise UserError(f"{path}:{number} is not valid JSON: {error}") from error
        except UnicodeDecodeError as error:
            raise UserError(f"{path} is not a text file of JSON lines ({error})") from error
    return rows


def check_output(
    path: str | Path, *, inputs: Iterable[str | Path | None] = (), directory: bool = False, what: str = "output"
) -> Path:
    """Refuse, before any work starts, an output that cannot be written or would overwrite an input: a directory
    where a file goes (a file where a directory goes), a parent that is a file, a read-only place (/proc, ...), or
    the same file as one of `inputs`. Creates nothing; returns the path."""
    path = Path(path)
    if path.exists():
        if directory and not path.is_dir():
            raise UserError(f"{what} {path} is a file, not a directory: choose a directory path")
        if not directory and path.is_dir():
            raise UserError(f"{what} {path} is a directory: give a file path")
    for source in inputs:
        if source is not None and path.exists() and Path(source).exists() and path.samefile(source):
            raise UserError(
                f"{what} {path} is the same file as the input {source}: choose another path, "
                "the input would be overwritten"
            )
    parent = path.resolve().parent if not path.exists() or not directory else path.resolve()
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot write {what} {path}: {existing} is a file, not a directory")
    if str(path.resolve()).startswith(("/proc/", "/sys/")) or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {what} {path}: {existing} is not writable")
    return path
