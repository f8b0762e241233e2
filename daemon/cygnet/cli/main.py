"""Entry point of the `cygnet` console script: runs the CLI and turns failures into exit codes.

A user error is one line on stderr and a documented exit code; a traceback
appears only with --debug.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from cygnet.cli.errors import CliError, Exit

if TYPE_CHECKING:
    import click

# The root's options accepted anywhere on the line (`cygnet db list --debug --host h`): moved
# to the front before click parses, up to a `--` (what follows belongs to psql). No
# subcommand has an option of these names (a unit test checks).
GLOBAL_FLAGS = {"--debug", "--json"}
GLOBAL_WITH_VALUE = {"--context", "--socket", "--host", "--ca", "--cert", "--key",
                     "--server-name", "--timeout", "--coordinator"}


def hoist_globals(argv: list[str]) -> list[str]:
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg in GLOBAL_FLAGS or (arg.split("=", 1)[0] in GLOBAL_WITH_VALUE and "=" in arg):
            front.append(arg)
        elif arg in GLOBAL_WITH_VALUE and i + 1 < len(argv):
            front += argv[i:i + 2]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def _debug_requested(argv: list[str]) -> bool:
    # Known before parsing, so a failure while parsing can still show its traceback.
    return "--debug" in argv


def _fail(message: str, code: int) -> int:
    import click

    click.echo(f"cygnet: error: {message}", err=True)
    return code


def _usage(exc: click.UsageError) -> int:
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return _fail(f"{exc.format_message().rstrip('.')}{hint}", Exit.INVALID)


def _traceback() -> None:
    import traceback  # only with --debug: it costs milliseconds at every start

    traceback.print_exc()


def run(argv: list[str]) -> int:
    if argv in (["--version"], ["-V"]):
        # Scripts and health checks ask this in loops: answered before click is loaded.
        from cygnet import __version__

        sys.stdout.write(f"cygnet {__version__}\n")
        return 0
    argv = hoist_globals(argv)
    debug = _debug_requested(argv)
    if not debug:
        # gRPC core logs handshake and connection failures itself; we report them once.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    # Imported only now: grpc reads GRPC_VERBOSITY when it is loaded.
    import click

    from cygnet.cli.app import cli

    try:
        result = cli.main(args=argv, prog_name="cygnet", standalone_mode=False)
    except CliError as exc:
        if debug:
            _traceback()
        return _fail(exc.message, exc.code)
    except click.UsageError as exc:
        return _usage(exc)
    except click.ClickException as exc:
        return _fail(exc.format_message(), exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        return _fail("interrupted", Exit.INTERRUPTED)
    except BrokenPipeError:
        # `cygnet ... | head`: the reader left; nothing more to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if debug:
            _traceback()
            return Exit.ERROR
        return _fail(f"{type(exc).__name__}: {exc} (run with --debug for details)", Exit.ERROR)
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))
