"""The base of errors that explain themselves.

An `RRRError` message names what is wrong (a key, a path, an actor) and what to do about it;
the CLI prints it on one line without a traceback and exits with status 1. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class RRRError(Exception):
    """An error whose message is the whole story for the user."""
