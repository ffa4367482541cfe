"""Reward verifiers: pure-stdlib judges that turn a model response into a :class:`Verdict`.

Submodules:
    rrr.verifiers.countdown: the Countdown arithmetic game (``verify``, ``solve``).
    rrr.verifiers.apigen: APIGen / xLAM function calling (``verify``).

Every ``verify`` is total on strings: it never raises on model output and returns quickly on
hostile input, so callers can use it inside reward loops without a try/except.
"""

from rrr.verifiers.verdict import Verdict

__all__ = ["Verdict"]
