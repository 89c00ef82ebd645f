"""Shared entry-point behaviour for the thin scripts in ``stages/``.

A stage script defines ``main(args)``; :func:`run_stage` runs it and turns the errors a user
can fix (bad params, bad data, unreachable source) into one clear line on stderr and exit
status 2, instead of a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from cifarbench.config import ParamsError
from cifarbench.errors import UserError

__all__ = ["ParamsError", "UserError", "run_stage"]


def run_stage(main: Callable[[], None]) -> None:
    try:
        main()
    except (ParamsError, UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
