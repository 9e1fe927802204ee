"""What every `python -m gream_jax.*` entry point shares."""

from __future__ import annotations

import os
import sys


def run_cli(main, *args):
    """Runs a command-line `main(*args)`. A reader that closes the pipe early (`... | head`) ends
    the program with exit status 1 and no traceback: the reader already has what it wanted, and a
    `BrokenPipeError` stack would read as a crash of the program instead."""
    try:
        return main(*args)
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None
