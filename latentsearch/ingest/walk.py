"""Finding input files: folders walked, globs matched, file lists read.

Folders are walked in sorted order, files before subfolders. ``--include``/``--exclude`` globs
are matched against a file's path relative to the folder that was given (``/`` separated) and
against its name; a file is taken when either matches. ``*`` and ``?`` stop at ``/``, ``**`` as a
whole segment spans any number of folders (none included), ``[abc]``/``[!abc]`` are classes, and
matching is case-sensitive. With includes, a file must match one; an exclude always wins and also
prunes folders whose relative path or name matches. Hidden entries (a name starting with ``.``)
are left out unless ``hidden`` is set. Paths named explicitly (arguments, file lists) are always
taken. Symbolic links are followed; a folder reached twice (a link loop) is walked once, and a
file reached twice is one input, keyed by its resolved path.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import stat as stat_module
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..errors import InvalidInputError
from ..types import Skipped
from .keyset import KeySet
from .records import FileStat


@dataclass(frozen=True)
class SourceOptions:
    """Which files of a folder are inputs (see the module docstring for the glob rule)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hidden: bool = False  # also take names starting with "."

    def __post_init__(self) -> None:
        for name in ("include", "exclude"):
            value = getattr(self, name)
            patterns = (value,) if isinstance(value, str) else tuple(value)
            object.__setattr__(self, name, patterns)
            for pattern in patterns:
                compile_glob(pattern)  # a bad pattern fails here, not deep in a walk

    def wants_file(self, rel: str, name: str) -> bool:
        if not self.hidden and name.startswith("."):
            return False
        if self.include and not matches_any(self.include, rel, name):
            return False
        return not matches_any(self.exclude, rel, name)

    def wants_folder(self, rel: str, name: str) -> bool:
        if not self.hidden and name.startswith("."):
            return False
        return not matches_any(self.exclude, rel, name)


class FoundFile(NamedTuple):
    path: Path  # as reached (its name decides the type: a link's target may have no suffix)
    resolved: Path  # its identity: the same file reached twice is one input


# -- globs -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """A regex for ``pattern``: ``*``/``?`` within a segment, ``**`` across segments."""
    cleaned = pattern.strip().removeprefix("./").rstrip("/")
    if not cleaned:
        raise InvalidInputError(f"the glob {pattern!r} is empty; give a pattern like '*.md' or 'docs/**'")
    segments = cleaned.split("/")
    parts = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:[^/]*/)*")
        else:
            parts.append(_glob_segment(segment) + ("" if last else "/"))
    return re.compile("".join(parts), re.DOTALL)


def _glob_segment(segment: str) -> str:
    out, i = [], 0
    while i < len(segment):
        c = segment[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := _class_end(segment, i)) > 0:
            negate = segment[i] == "!"
            body = "".join("\\" + ch if ch in "\\^[]&~|" else ch for ch in segment[i + negate : end])
            out.append(f"[^/{body}]" if negate else f"[{body}]")
            i = end + 1
        else:
            out.append(re.escape(c))
    return "".join(out)


def _class_end(segment: str, i: int) -> int:
    """Where the class opened before ``i`` closes (-1: not a class; ``[`` is then literal)."""
    j = i + (segment[i : i + 1] == "!")
    j += segment[j : j + 1] == "]"  # a leading ] is a member
    return segment.find("]", j)


def matches_any(patterns: Iterable[str], rel: str, name: str) -> bool:
    """Whether a pattern matches the path relative to the root or the name."""
    return any(bool(rx.fullmatch(rel) or rx.fullmatch(name)) for rx in map(compile_glob, patterns))


# -- finding files -----------------------------------------------------------------------------


def os_error_reason(exc: OSError, what: str = "file") -> str:
    """A short reason for a failed stat/open/read."""
    if isinstance(exc, FileNotFoundError):
        return f"{what} vanished"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    return f"cannot read: {exc.strerror or exc}"


def iter_files(
    paths: Iterable[str | Path], options: SourceOptions = SourceOptions()
) -> Iterator[FoundFile | Skipped]:
    """Each file under ``paths`` once (folders walked, see the module docstring)."""
    seen = KeySet()  # resolved paths, 8 bytes each (a million files must not mean a million Paths)
    walked = KeySet()
    for raw in paths:
        path = Path(raw).expanduser()
        try:
            st = os.stat(path)
        except FileNotFoundError:
            reason = "broken symbolic link" if os.path.islink(path) else "no such file or folder"
            yield Skipped(str(path.absolute()), reason)
            continue
        except OSError as exc:
            yield Skipped(str(path.absolute()), os_error_reason(exc))
            continue
        found = _walk(path, options, walked) if stat_module.S_ISDIR(st.st_mode) else [_found(path)]
        for item in found:
            if isinstance(item, FoundFile):
                if not seen.add(str(item.resolved)):
                    continue
            yield item


def _found(path: Path) -> FoundFile | Skipped:
    try:
        return FoundFile(path, path.resolve(strict=True))
    except FileNotFoundError:
        reason = "broken symbolic link" if os.path.islink(path) else "file vanished"
        return Skipped(str(path.absolute()), reason)
    except OSError as exc:
        return Skipped(str(path.absolute()), os_error_reason(exc))
    except RuntimeError:  # a link loop, on Python versions that raise it
        return Skipped(str(path.absolute()), "symbolic link loop")


def _walk(root: Path, options: SourceOptions, walked: KeySet) -> Iterator[FoundFile | Skipped]:
    """Depth first, sorted, files before subfolders; a folder already walked is not entered again."""
    stack = [(root, os.path.realpath(root), "")]
    while stack:
        folder, real, rel = stack.pop()
        if not walked.add(real):
            continue  # a folder reached again (a link loop)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield Skipped(str(folder.absolute()), os_error_reason(exc, "folder"))
            continue
        subfolders = []
        for entry in entries:
            entry_rel = f"{rel}/{entry.name}" if rel else entry.name
            path = folder / entry.name
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if options.wants_folder(entry_rel, entry.name):
                    target = os.path.realpath(path) if entry.is_symlink() else os.path.join(real, entry.name)
                    subfolders.append((path, target, entry_rel))
            elif options.wants_file(entry_rel, entry.name):
                if entry.is_symlink():
                    yield _found(path)
                else:
                    yield FoundFile(path, Path(real) / entry.name)
        stack.extend(reversed(subfolders))


def paths_from_list(name: str | Path) -> Iterator[str]:
    """The paths listed in a file (``-``: stdin), one per line; blank lines and ``#`` comments
    are ignored, relative paths are relative to the working folder."""
    if str(name) == "-":
        stream = getattr(sys.stdin, "buffer", None)
        yield from _list_lines(stream if stream is not None else sys.stdin)
        return
    with open(name, "rb") as fh:
        yield from _list_lines(fh)


def _list_lines(stream: Iterable[bytes | str]) -> Iterator[str]:
    for line in stream:
        text = line.decode("utf-8", "surrogateescape") if isinstance(line, bytes) else line
        text = text.strip()
        if text and not text.startswith("#"):
            yield text


def probe_file(path: Path) -> FileStat:
    """Size and mtime of a readable regular file (``OSError``/``ValueError`` when it is not)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat_module.S_ISREG(st.st_mode):
        raise ValueError("not a regular file")
    return FileStat(st.st_size, st.st_mtime_ns)
