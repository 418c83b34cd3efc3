"""How a ``certgate`` command stops when it cannot do what it was asked (pure; shared by trust and proxy).

The exit-status convention of every ``certgate`` command (``docs/operations.md``):

- 0: done; for a question (``trust verify``, ``trust map``) the answer is yes.
- 1: the answer is no (``trust verify``: refused or no account; ``trust map``: no account, or
  the ``--account`` login would be refused; the report on standard output says why), or a
  runtime failure that is not the operator's mistake: the gateway's admin API does not answer
  or answers with a server error, the session store fails during an operation, the disk
  fails during a write (:class:`RuntimeFailure`).
- 2: an operator mistake: a bad argument, a file that is missing, unreadable or malformed, a
  config or trust store that will not load, a session store that will not open, an unknown
  account, session id, fingerprint or key, an edit the trust store refuses
  (:class:`OperatorError`; argparse errors too).
- 70: an unexpected error (a bug); ``CERTGATE_DEBUG=1`` shows the traceback.
- 130: interrupted (Ctrl-C).

Commands raise these errors; :func:`run_command` (what the ``certgate`` dispatcher and the
stand-alone entry points call) alone prints them with :func:`report` and returns their
status, so every mistake is one escaped line on standard error (``certgate VERB: WHERE:
WHAT: WHY``) and never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import IO, Callable, ClassVar, NoReturn, Sequence

from .escape import safe_text

EXIT_OK = 0
EXIT_NO = 1
EXIT_MISTAKE = 2
EXIT_BUG = 70
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A command stopped: what is wrong, where (a file, a store, an option) and why.

    ``problems`` (instead of one ``what``) gives one line per problem, each prefixed by
    ``where`` (``check-config``'s report). ``str()`` is the first line.
    """

    status: ClassVar[int] = EXIT_MISTAKE

    def __init__(self, what: str, where: object = None, why: str | None = None, *,
                 problems: Sequence[object] = ()) -> None:
        self.what, self.where, self.why = what, where, why
        self.problems = [str(p) for p in problems]
        #: the sub-command word (``remove`` of ``certgate trust remove``), set by a command with verbs
        self.verb: str | None = None
        super().__init__(self.lines()[0])

    def lines(self) -> list[str]:
        """The message lines, each escaped (no control characters, so no line breaks)."""
        prefix = f"{self.where}: " if self.where not in (None, "") else ""
        if self.problems:
            return [safe_text(prefix + p) for p in self.problems]
        return [safe_text(prefix + self.what + (f": {self.why}" if self.why else ""))]


class OperatorError(CommandError):
    """The operator's mistake (exit status 2): the command line, a file, the config or the state named."""

    status = EXIT_MISTAKE


class RuntimeFailure(CommandError):
    """A failure at run time that is not the operator's mistake (exit status 1): a service the
    command talks to does not answer, or the disk fails during a write."""

    status = EXIT_NO


def joined(problems: Sequence[object]) -> str:
    """Several problems on one line, ``; ``-separated."""
    return "; ".join(str(p) for p in problems)


def config_problems(path: object, problems: Sequence[object]) -> OperatorError:
    """A config that will not load, as one line: its one problem, or how many and each of them."""
    if len(problems) == 1:
        return OperatorError(str(problems[0]), path)
    return OperatorError(f"the config has {len(problems)} problems", path, joined(problems))


def report(prog: str, exc: CommandError, stream: IO[str]) -> int:
    """Print ``exc`` as ``PROG [VERB]: LINE`` (one line per problem) on ``stream``; returns its exit status."""
    if exc.verb:
        prog = f"{prog} {safe_text(exc.verb)}"
    for line in exc.lines():
        print(f"{prog}: {line}", file=stream)
    stream.flush()
    return exc.status


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors raise :class:`OperatorError` (one line, status 2)
    instead of printing the usage block and exiting; sub-parsers inherit it. ``--help`` still exits 0."""

    def error(self, message: str) -> NoReturn:
        raise OperatorError(message, why=f"`{self.prog} --help` shows the usage")


def os_error(e: OSError, where: object = None) -> CommandError:
    """An OSError as the file it names (or ``where``) and why: a full disk or an I/O error is a
    runtime failure (1); anything else (missing, unreadable, not a folder...) is the operator's
    mistake (2)."""
    kind = RuntimeFailure if e.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT) else OperatorError
    return kind(e.strerror or str(e), where=where if where is not None else getattr(e, "filename", None))


def run_command(prog: str, fn: Callable[[list[str]], int], argv: list[str], stream: IO[str] | None = None) -> int:
    """Run ``fn(argv)`` and return its exit status; the one place an error becomes its line and status.

    :class:`CommandError` -> its line(s) and status (2 or 1); EOFError and OSError -> one line,
    status 2 (1 for a full disk or an I/O error); Ctrl-C -> 130; anything else -> one line,
    status 70 (``CERTGATE_DEBUG=1`` re-raises it, so the traceback shows). ``--help`` and
    other ``SystemExit`` pass through.
    """
    err = stream or sys.stderr
    try:
        return int(fn(argv) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=err)
        return EXIT_INTERRUPTED
    except CommandError as e:
        return report(prog, e, err)
    except EOFError as e:
        return report(prog, OperatorError(str(e) or "standard input ended early"), err)
    except OSError as e:
        return report(prog, os_error(e), err)
    except Exception as e:
        if os.environ.get("CERTGATE_DEBUG"):
            raise
        print(f"{prog}: unexpected error: {safe_text(f'{type(e).__name__}: {e}')} "
              "(CERTGATE_DEBUG=1 shows the traceback)", file=err)
        return EXIT_BUG
