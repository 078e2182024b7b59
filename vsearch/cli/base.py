"""The Typer plumbing under ``cli.py``: Unix manners, one error line, plain flags, quick start-up.

:class:`VsearchGroup` is the command group every ``vsearch`` command runs in. It

* turns a usage mistake (``--k 0``, ``--format bogus``, an ``--index-dir`` that is a file) into
  one ``error: ...`` line and status 1, the same as any other user error, instead of a usage box
  and status 2; ``vsearch`` alone prints the help and exits 0;
* ends quietly with status 0 when stdout is closed early (``vsearch query x.jpg -f paths | head -1``),
  as Python's ``signal`` docs advise: catch ``BrokenPipeError`` at the top and point stdout at
  /dev/null so the interpreter's last flush cannot fail again;
* shows library warnings logged while a command runs in the CLI's words, flag names and
  commands (:func:`~vsearch.cli.wording.library_warnings`);
* writes file names that are not valid UTF-8 back as the bytes they were (stdout,
  surrogateescape) or as backslash escapes (stderr), never a ``UnicodeEncodeError``;
* shows flags as flags (Typer 0.29 gives every flag a ``<bool>`` type column, which reads as if it
  took a value);
* checks and converts option values itself. Typer 0.29 builds a pydantic ``TypeAdapter`` for each
  parameter of the command being run, which costs about a third of a quick query's whole-process
  time (0.1-0.2 s of imports and schema building). The types vsearch uses (str, int, float, Path,
  an Enum, lists of those) are converted here with Typer's own parameter settings (min, max,
  file_okay, dir_okay, exists); anything else falls back to Typer.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import sys
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

import typer
from typer.core import TyperGroup

from vsearch.cli.wording import library_warnings


class _Converter:
    """Converts one parameter's command-line text the way Typer would, without pydantic.

    Installed as the parameter's ``_runtime_param`` (Typer's lazily built converter): an object
    with ``coerce(value, param, ctx)``.
    """

    def __init__(self, param: Any, leaf: type) -> None:
        self.leaf = leaf
        self.info = param.type_descriptor.parameter_info

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        multi = param.multiple or param.nargs == -1
        if value is None:
            return () if multi else None
        if multi:
            if isinstance(value, str):
                raise typer.BadParameter("a list of values was expected", ctx=ctx, param=param)
            return [self._one(v, param, ctx) for v in value]
        return self._one(value, param, ctx)

    def _one(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, bytes):
            value = os.fsdecode(value)
        leaf = self.leaf
        if leaf is bool:  # a flag (``--help`` arrives as None, handled above)
            return self._bool(value, param, ctx)
        if issubclass(leaf, Enum):
            return self._choice(value, param, ctx)
        if leaf is int or leaf is float:
            number = value if type(value) is leaf else self._number(value, param, ctx)  # a default stays as it is
            return self._ranged(number, param, ctx)
        if leaf is str:
            return str(value)
        return self._path(Path(value), param, ctx)  # _leaf_type admits nothing else

    def _bool(self, value: Any, param: Any, ctx: Any) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on", "y", "t"):
            return True
        if text in ("0", "false", "no", "off", "n", "f", ""):
            return False
        raise typer.BadParameter(f"{value!r} is not true or false", ctx=ctx, param=param)

    def _choice(self, value: Any, param: Any, ctx: Any) -> Enum:
        members = list(self.leaf)  # type: ignore[call-overload]  # an Enum class iterates its members
        if isinstance(value, self.leaf):
            return value  # type: ignore[return-value]  # leaf is an Enum class: its members are Enums
        text = str(value)
        for m in members:
            if m.value == text or (not self.info.case_sensitive and str(m.value).lower() == text.lower()):
                return m
        names = [str(m.value) for m in members]
        choices = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
        raise typer.BadParameter(f"{text!r} is not one of the choices: {choices}", ctx=ctx, param=param)

    def _number(self, value: Any, param: Any, ctx: Any) -> int | float:
        kind = "a whole number" if self.leaf is int else "a number"
        try:
            number = self.leaf(str(value).strip())
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not {kind}", ctx=ctx, param=param) from None
        if isinstance(number, float) and not math.isfinite(number):
            raise typer.BadParameter(f"{value!r} is not a finite number", ctx=ctx, param=param)
        return number

    def _ranged(self, number: Any, param: Any, ctx: Any) -> Any:
        low, high = self.info.min, self.info.max
        if low is not None and number < low:
            raise typer.BadParameter(f"{number} is below the minimum, {low}", ctx=ctx, param=param)
        if high is not None and number > high:
            raise typer.BadParameter(f"{number} is above the maximum, {high}", ctx=ctx, param=param)
        return number

    def _path(self, path: Path, param: Any, ctx: Any) -> Path:
        info = self.info
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:  # no file can have this name: say so here, once
                raise typer.BadParameter(f"{path}: file name too long", ctx=ctx, param=param) from None
            if info.exists:
                raise typer.BadParameter(f"{path} does not exist", ctx=ctx, param=param) from None
            return path
        if not info.file_okay and not stat.S_ISDIR(mode):
            raise typer.BadParameter(f"{path} is a file; give a folder", ctx=ctx, param=param)
        if not info.dir_okay and stat.S_ISDIR(mode):
            raise typer.BadParameter(f"{path} is a folder; give a file name", ctx=ctx, param=param)
        return path


def _leaf_type(annotation: Any) -> type | None:
    """The element type vsearch's converter handles for ``annotation``, or None to leave it to Typer."""
    if get_origin(annotation) is list:
        (annotation,) = get_args(annotation) or (None,)
    if not isinstance(annotation, type):
        return None
    if annotation in (bool, int, float, str) or issubclass(annotation, (Enum, Path)):
        return annotation
    return None


def _tune(param: Any) -> None:
    """Plain flags and the pydantic-free converter for one Typer parameter, where Typer allows it."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None:  # pragma: no cover - an older Typer (real click): nothing to tune
        return
    if getattr(param, "is_flag", False) and param.metavar is None:
        param.metavar = ""  # the help's type column stays empty: a flag takes no value
    leaf = _leaf_type(descriptor.annotation)
    info = descriptor.parameter_info
    if (leaf is not None and "_runtime_param" in vars(param) and getattr(info, "parser", None) is None
            and not getattr(info, "resolve_path", False) and not getattr(param, "count", False)):
        param._runtime_param = _Converter(param, leaf)


def _plain_help_flag(command: Any) -> None:
    """``--help`` is made on first use, outside ``params``: tune it when it is made."""
    make = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = make(ctx)
        if option is not None:
            _tune(option)
        return option

    command.get_help_option = get_help_option


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def usage_error_line(exc: Any) -> str:
    """One line for a Typer/click usage error: ``error: --k: 0 is below the minimum, 1 (see ...)``."""
    ctx = getattr(exc, "ctx", None)
    param = getattr(exc, "param", None)
    message = getattr(exc, "message", "") or ""
    if param is not None and message and param.name:  # BadParameter: name the option or argument
        opts = [o for o in param.opts if o.startswith("--")] or param.opts
        name = opts[0] if param.param_type_name == "option" else param.name.upper()
        message = f"{name}: {message}"
    else:  # the rest (a missing argument, an unknown option) already say which
        message = exc.format_message()
        message = message[:1].lower() + message[1:]
    message = " ".join(message.split())  # one line, whatever click wrapped
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return f"error: {message.rstrip('.')}{hint}"


def stdout_closed() -> None:
    """stdout's reader went away: send what is left to /dev/null so the exit flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real descriptor (an in-process test runner)
        pass


def _stdout_is_devnull() -> bool:
    try:
        return os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(os.devnull))
    except (OSError, ValueError, AttributeError):
        return False


def _escape_unencodable() -> None:
    """Paths that are not valid UTF-8 go to stdout as their own bytes, to stderr as escapes."""
    for stream, errors in ((sys.stdout, "surrogateescape"), (sys.stderr, "backslashreplace")):
        try:
            stream.reconfigure(errors=errors)  # type: ignore[union-attr]  # a TextIOWrapper; others raise AttributeError
        except (AttributeError, ValueError, OSError):  # not a TextIOWrapper (captured output)
            pass


class VsearchGroup(TyperGroup):
    """The ``vsearch`` group: see the module docstring for what it adds to Typer's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in [self, *self.commands.values()]:
            for param in command.params:
                _tune(param)
            _plain_help_flag(command)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        """Run a command; usage mistakes, a closed stdout and Ctrl-C end the way the module says.
        (``windows_expand_args`` is the base class's; arguments are never glob-expanded here.)"""
        args = list(sys.argv[1:] if args is None else args) or ["--help"]
        _escape_unencodable()
        try:
            try:
                # Always "vsearch": `python -m vsearch` and test runners would otherwise name it after themselves.
                with self.make_context("vsearch", args, **extra) as ctx, library_warnings():
                    self.invoke(ctx)
                code: Any = 0
                sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
            except typer.Exit as exc:
                code = exc.exit_code
            except typer.TyperException as exc:  # click's UsageError, BadParameter, FileError...
                if not standalone_mode:
                    raise
                _say(usage_error_line(exc))
                code = 1
            except typer.Abort:
                _say("aborted")
                code = 1
            except KeyboardInterrupt:
                _say("interrupted")
                code = 130
            except EOFError:
                _say("aborted (end of input)")
                code = 1
        except BrokenPipeError:
            stdout_closed()
            code = 0
        except SystemExit as exc:
            # rich (the help, a table on a terminal) meets a closed pipe by pointing stdout at
            # /dev/null and raising SystemExit(1) (Console.on_broken_pipe). Nothing else under a
            # command raises SystemExit, so that one is a closed pipe too: status 0.
            if exc.code != 1 or not _stdout_is_devnull():
                raise
            code = 0
        if standalone_mode:
            sys.exit(code)
        return code
