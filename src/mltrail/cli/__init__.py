"""The ``mltrail`` command. One module per verb under this package holds the verb's options
(``add_arguments``), its help line (``HELP``) and its thin ``<verb>_command(args) -> exit
code``, which calls the library; this file only wires them.

A verb module may also set ``USAGE`` and ``EPILOG`` (examples and exit codes, shown verbatim
at the end of its ``--help``).

Verb modules import the library inside their command function, not at their top: building the
parser imports every verb module, and ``mltrail --help`` or ``mltrail runs`` (which answers from
a local sqlite store in a fraction of a second) must not pay for the other verbs' imports.

Exit codes shared by every verb: 0 success, 1 the verb's own "no" (listed in its ``--help``), 2 a
usage or input error (the message names it; ``mltrail`` alone prints the help and exits 0),
130 interrupted.
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
VERBS = (
    "runs", "show", "sync", "checkout", "verify", "diff", "reproduce", "env", "push", "which",
    "register", "best", "lineage", "run",
)  # fmt: skip

#: Help of positional arguments that a verb module leaves without one, by their name.
POSITIONAL_HELP = {
    "run_id": "the run's id (as `mltrail runs` lists it)",
    "run_a": "the first run's id",
    "run_b": "the second run's id",
    "path": "a model or checkpoint file",
}

EPILOG = """\
examples:
  mltrail runs                      runs made from the commit checked out here
  mltrail show RUN_ID               a run's code, data, environment and results
  mltrail checkout RUN_ID --into ../v1
  mltrail best --metric val_loss    the best run by a metric, its model and provenance
  mltrail register RUN_ID NAME      register a run's model, tagged with its code and data
  mltrail sync                      upload runs journaled while the store was away
  mltrail VERB --help               a verb's options, examples and exit codes

exit codes: 0 success; 1 the verb's own "no" (see its --help); 2 a usage or input error;
130 interrupted. Every verb takes --json for machine-readable output and -v for debug logging.
"""


def verb_module(verb: str) -> ModuleType:
    """The module of ``verb`` (see the module docstring for what it holds)."""
    return importlib.import_module(f"{__name__}.{verb}")


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``mltrail`` command, every verb included."""
    from mltrail.version import __version__

    parser = argparse.ArgumentParser(
        prog="mltrail",
        description="Find and reproduce MLflow training runs by their code, data and environment.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mltrail {__version__}")
    parser.add_argument("--verbose", "-v", action="store_true", help="show debug logging")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        module = verb_module(verb)
        sub = verbs.add_parser(
            verb,
            help=module.HELP,
            description=f"mltrail {verb}: {module.HELP}.",
            usage=getattr(module, "USAGE", None),
            epilog=getattr(module, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        # -v after the verb too; SUPPRESS keeps a -v given before the verb.
        sub.add_argument(
            "--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
            help="show debug logging",
        )  # fmt: skip
        for action in sub._actions:  # argparse has no public list of a parser's arguments
            if not action.option_strings and action.help is None:
                action.help = POSITIONAL_HELP.get(action.dest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mltrail`` console script; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `mltrail VERB [options] -- COMMAND...`: the command after "--" is not parsed; verbs that
    # take one have a `command` attribute.
    split = argv.index("--") if "--" in argv else len(argv)
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv[:split])
    if args.verb is None:  # options without a verb, e.g. `mltrail -v`
        parser.print_help()
        return 0
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
