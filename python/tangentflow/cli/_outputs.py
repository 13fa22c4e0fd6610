"""Output-file options of the subcommands, checked before any work.

Every option that names an output file (``--json``, ``--plot``) is registered with
:func:`add_output_option`; :func:`check_outputs` then checks all of the chosen
subcommand's outputs after parsing: each must name a new or existing regular file in a
writable folder, and no two of them the same file. A bad one exits with status 2 and a
message on stderr (argparse's convention).
"""

from __future__ import annotations

import argparse
import errno
import os
import stat

__all__ = ["OUTPUTS_KEY", "add_output_option", "output_problem", "check_outputs"]

#: Destination (in the parsed namespace) of the list of a subcommand's output options,
#: ``(option, dest, suffix)`` each: set by add_output_option, read by check_outputs.
OUTPUTS_KEY = "_output_options"


def add_output_option(
    sub: argparse.ArgumentParser,
    option: str,
    *,
    metavar: str,
    help: str,
    suffix: str | None = None,
) -> None:
    """Adds an output-file option to a subparser; :func:`check_outputs` then checks it
    (and every other registered output of that subcommand) before any work."""
    dest = option.lstrip("-").replace("-", "_")
    sub.add_argument(option, metavar=metavar, dest=dest, help=help)
    outputs = list(sub.get_default(OUTPUTS_KEY) or [])
    outputs.append((option, dest, suffix))
    sub.set_defaults(**{OUTPUTS_KEY: outputs})


def output_problem(path: str, suffix: str | None = None) -> str | None:
    """Why ``path`` cannot be written as an output file, or None when it can.

    Checked without changing anything that exists: the name (empty, too long, wrong
    suffix), what it points at (a directory, a device such as /dev/full, a dangling
    symbolic link, anything but a regular file) and the folder (missing, not a folder,
    not writable: a new file is created there and removed again, which also catches
    read-only and virtual file systems such as /proc).
    """
    if path == "":
        return "the file name is empty"
    if "\0" in path:
        return "the file name contains a NUL character"
    if suffix is not None and not path.lower().endswith(suffix):
        return f"expected a file name ending in {suffix}"
    base = os.path.basename(path)
    if base in ("", ".", ".."):
        return "names a directory, not a file"
    folder = os.path.dirname(os.path.abspath(path))
    try:
        name_max = os.pathconf(folder if os.path.isdir(folder) else "/", "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(base)) > name_max:
        return f"the file name is longer than {name_max} bytes"
    if os.path.islink(path) and not os.path.exists(path):
        return f"is a symbolic link to {os.readlink(path)!r}, which does not exist"
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        return os.strerror(e.errno) if e.errno else str(e)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            return "is a directory"
        if not stat.S_ISREG(st.st_mode):
            return "is not a regular file (a device, pipe or socket)"
        if not os.access(path, os.W_OK):
            return "the file is not writable"
        try:
            with open(path, "ab"):
                pass  # opens for writing without truncating or changing the contents
        except OSError as e:
            return os.strerror(e.errno) if e.errno else str(e)
        return None
    if not os.path.isdir(folder):
        return f"the folder {folder!r} does not exist"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            return "the path is too long"
        return f"cannot create a file in {folder!r}: {os.strerror(e.errno) if e.errno else e}"
    os.close(fd)
    os.unlink(path)
    return None


def check_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exits with status 2 (argparse's convention) when an output option of the chosen
    subcommand names a file that cannot be written, or two of them name the same file."""
    seen: dict[str, str] = {}
    outputs: list[tuple[str, str, str | None]] = getattr(args, OUTPUTS_KEY, None) or []
    for option, dest, suffix in outputs:
        path = getattr(args, dest, None)
        if path is None:
            continue
        problem = output_problem(path, suffix)
        if problem is not None:
            parser.error(f"argument {option}: cannot write {path!r}: {problem}")
        real = os.path.realpath(path)
        if real in seen:
            parser.error(
                f"arguments {seen[real]} and {option} name the same file {path!r}: "
                "give each output its own file"
            )
        seen[real] = option
