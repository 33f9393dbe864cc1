"""The ``mltrail`` command. One module per verb under this package holds the verb's options
(``add_arguments``), its help line (``HELP``) and its thin ``<verb>_command(args) -> exit
code``, which calls the library; this file only wires them.

Verb modules import the library inside their command function, not at their top: building the
parser imports every verb module, and ``mltrail --help`` or ``mltrail runs`` (which answers from
a local sqlite store in a fraction of a second) must not pay for the other verbs' imports.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from mltrail.errors import MltrailError
from mltrail.recording.sanitize import redact_text

#: The verbs in the order ``mltrail --help`` lists them; each is the module mltrail.cli.<verb>.
VERBS = ("runs", "show", "sync", "checkout", "verify", "diff", "reproduce", "push", "which", "run")


def verb_module(verb: str) -> ModuleType:
    """The module of ``verb`` (see the module docstring for what it holds)."""
    return importlib.import_module(f"{__name__}.{verb}")


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``mltrail`` command, every verb included."""
    parser = argparse.ArgumentParser(
        prog="mltrail",
        description="Find and reproduce MLflow training runs by their code, data and environment.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="show debug logging")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        module = verb_module(verb)
        sub = verbs.add_parser(
            verb,
            help=module.HELP,
            usage=getattr(module, "USAGE", None),
            epilog=getattr(module, "EPILOG", None),
        )
        module.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mltrail`` console script; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `mltrail VERB [options] -- COMMAND...`: the command after "--" is not parsed; verbs that
    # take one have a `command` attribute.
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    if split < len(argv):
        if not hasattr(args, "command"):
            parser.error(f"unrecognized arguments: {' '.join(argv[split:])}")
        args.command = [*(args.command or []), *argv[split + 1 :]]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(message)s",
    )
    try:
        function = getattr(verb_module(args.verb), f"{args.verb}_command")
        return int(function(args) or 0)
    except MltrailError as error:
        print(f"mltrail {args.verb}: {redact_text(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if args.verbose:
            raise
        message = redact_text(f"{type(error).__name__}: {error}").splitlines()[0]
        print(f"mltrail {args.verb}: {message} (run with -v for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
