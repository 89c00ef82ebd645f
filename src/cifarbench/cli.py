"""Shared entry-point behaviour for the thin scripts in ``stages/``.

A stage script defines ``parse_args(argv)`` and ``main(argv=None)`` (tests pass ``argv``; with
None argparse reads ``sys.argv``) and ends with ``run_stage(main)``. :func:`run_stage` calls
``main()`` and turns the errors a user can fix (bad params, bad data, unreachable source, a cap
too low for the data, a full disk, running out of memory) into one clear line on stderr and
exit status 2, instead of a traceback. Anything else is a bug and keeps its traceback.
SIGTERM (``dvc queue kill``, CI timeouts, schedulers) is handled like Ctrl-C: it raises in the
running code so that every ``with``/``finally`` removes its temporaries, then the stage exits
with status 143.
"""

from __future__ import annotations

import errno
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from cifarbench.config import ParamsError
from cifarbench.errors import UserError

__all__ = ["ParamsError", "Terminated", "UserError", "run_stage"]

_PACKAGE = Path(__file__).resolve().parent


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; a KeyboardInterrupt so that code that cleans up after Ctrl-C also does."""


def _on_sigterm(signum: int, frame: object) -> None:
    # A second SIGTERM must not cut the cleanup of the first one short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def run_stage(main: Callable[[], None]) -> None:
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        main()
    except (ParamsError, UserError) as exc:
        text = str(exc)
        if isinstance(exc, UserError):  # one line; a ParamsError has one line per bad key
            text = " ".join(text.split("\n"))
        print(f"error: {text}", file=sys.stderr)
        sys.exit(2)
    except MemoryError as exc:
        detail = f" ({exc})" if str(exc) else ""
        print(f"error: out of memory {_where()}{detail}; lower data.image_size or the data.* caps "
              "(README: Limits and caps), or run on a machine with more memory", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: no space left on the device writing {exc.filename or 'an output'} "
              f"({exc.strerror}); free some space and run the stage again", file=sys.stderr)
        sys.exit(2)
    except Terminated:
        print("terminated (SIGTERM); temporary files removed", file=sys.stderr)
        sys.exit(143)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _where() -> str:
    """'in <module>:<line> (<function>)' of the innermost frame of this package, if any."""
    frames = traceback.extract_tb(sys.exc_info()[2])[1:]  # the first is run_stage's own
    ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(_PACKAGE)] or frames
    if not ours:
        return ""
    f = ours[-1]
    return f"in {Path(f.filename).name}:{f.lineno} ({f.name})"
