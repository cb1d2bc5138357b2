"""The `deformable-detr` command: thin handlers that parse arguments, call one library function, print.

Exit status: 0 success, 1 the work found problems (check-data), 2 bad usage or unusable input
(one line `error: ...` on stderr; `--debug` adds the traceback).

One module per command (or pair of related commands). Adding a command: a module `cli/<name>.py`
with `register(subparsers)` that adds its parser with `parser.set_defaults(handler=_<name>)`, the
handler `_<name>(args) -> int | None` (under ~15 lines; import the library inside it so `--help`
stays fast), and its `register` appended to `COMMANDS` below.
"""

from __future__ import annotations

import argparse
import re
import sys
import traceback
import warnings

from .. import __version__
from ..errors import DeformableDetrError
from . import bench, data, demo, evaluate, experiment, explain, export, predict, serve, train


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command in `COMMANDS` registered."""
    parser = _Parser(
        prog="deformable-detr",
        description="Deformable DETR: train, evaluate and inspect object detectors.",
        epilog="exit status: 0 success, 1 problems found (check-data), 2 bad usage or unusable input",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in COMMANDS:
        add_command(subparsers)
    _accept_debug_anywhere(subparsers)
    return parser


def _accept_debug_anywhere(subparsers) -> None:
    """Let `--debug` also follow a command (`deformable-detr predict ... --debug`), at every level."""
    for command in subparsers.choices.values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_debug_anywhere(action)


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]) and return the exit status.

    The package's own errors (`DeformableDetrError`: bad data, checkpoints, options, model inputs) and
    OSErrors (a missing or unreadable file) are one `error: ...` line, exit 2. Anything else is a bug
    and keeps its traceback.
    """
    args = build_parser().parse_args(argv)
    if not args.debug:  # a library warning is one `warning: ...` line, without Python's source-line echo
        warnings.formatwarning = lambda message, category, *rest, **kwargs: f"warning: {one_line(message)}\n"
    try:
        return args.handler(args) or 0
    except (DeformableDetrError, OSError) as error:  # messages that name the file/field and the fix
        if args.debug:
            traceback.print_exc()
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(error: BaseException) -> str:
    """The error's message on one line, without terminal escape codes."""
    message = " ".join(_ANSI_ESCAPE.sub("", str(error)).split())
    return message or type(error).__name__


# Every command, in `--help` order.
COMMANDS = [
    data.register_make_dataset,
    evaluate.register,
    data.register_check_data,
    data.register_convert,
    demo.register,
    train.register,
    predict.register,
    explain.register,
    export.register,
    serve.register,
    bench.register,
    experiment.register,
]
