"""The ``datascout`` command line: thin, parse -> call the library -> print.

Each command group lives in its own module with a ``register(subparsers)`` function. A user's
mistake (any :class:`~datascout.exceptions.DatascoutError`, or a usage error) prints one line and
exits with status 2; ``--debug`` shows the traceback. A classifier that does not converge gives
one note at the end instead of scikit-learn's warning at every fit (``--debug`` shows them all).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings

from datascout import __version__
from datascout.exceptions import DatascoutError

# command modules, in the order their commands appear in --help
COMMAND_MODULES = ["simulate", "demo", "index", "datasets", "embed", "prune", "labels", "campaign", "label-studio"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2 (argparse's own convention)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="datascout",
        description="Decide which data to label next (active learning, SEALS) and which to keep.",
        epilog="Example: datascout demo",
    )
    parser.add_argument("--version", action="version", version=f"datascout {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"datascout.cli.{name.replace('-', '_')}")
        except Exception as exc:  # reported, never dropped: the command stays in --help
            _unavailable(sub, name, exc)
            continue
        module.register(sub)
    for group in sub.choices.values():  # a group given without its sub-command prints its help
        if group.get_default("func") is None:
            group.set_defaults(func=lambda args, group=group: _print_help(group))
    return parser


def _print_help(parser) -> int:
    parser.print_help()
    return 2


def _unavailable(sub, name: str, exc: Exception) -> None:
    """A command whose module cannot be imported: listed with the reason, and running it says why."""
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())
    # no options of its own: whatever follows is taken as it is (prefix_chars no argument uses)
    p = sub.add_parser(name, help=f"(cannot be loaded: {reason})", add_help=False, prefix_chars="\0")
    p.add_argument("rest", nargs="*", help=argparse.SUPPRESS)

    def fail(args):
        raise DatascoutError(f"the {name!r} command cannot be loaded ({reason}): "
                             "reinstall datascout with its extras, or run with --debug") from exc

    p.set_defaults(func=fail)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with contextlib.nullcontext() if args.debug else convergence_note():
            return int(args.func(args) or 0)
    except DatascoutError as exc:
        if args.debug:
            raise
        print(f"datascout: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("datascout: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``datascout campaign status DIR | head``): stop quietly
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush fails no more
        return 1


@contextlib.contextmanager
def convergence_note(stream=None):
    """Hold back scikit-learn's ConvergenceWarnings and print one line for them at the end.

    A simulation refits its model every round, and a model that stops at its iteration limit
    would otherwise print a 10-line warning each time. Other warnings pass through unchanged.
    """
    first = []
    with warnings.catch_warnings():
        passthrough = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if category.__name__ == "ConvergenceWarning":  # no sklearn import for --help
                first[:] = first or [str(message).strip().splitlines()[0].rstrip(":")]
            else:
                passthrough(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        try:
            yield
        finally:
            if first:
                print(f"datascout: note: the model did not converge in some fits ({first[0]}); "
                      "standardise the features, or choose another model (--debug shows every warning)",
                      file=stream or sys.stderr)


def command(sub, name: str, help: str, example: str, func):
    """Add a sub-command whose help ends with an example."""
    p = sub.add_parser(name, help=help, description=help, epilog=f"Example:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback on errors")
    p.set_defaults(func=func)
    return p


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
