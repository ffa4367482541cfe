"""Reward verifiers: pure-stdlib judges that turn a model response into a :class:`Verdict`.

Submodules:
    rrr.verifiers.countdown: the Countdown arithmetic game (``verify``, ``solve``).
    rrr.verifiers.apigen: APIGen / xLAM function calling (``verify``).

Every ``verify`` is total on strings: it never raises on model output and returns quickly on
hostile input, so callers can use it inside reward loops without a try/except.
"""

# The card keeps this folder at the top of the repository, so a bare `import verifiers` from the
# repository root (on sys.path there) would load it a second time under the wrong name.
if __name__ != "rrr.verifiers":
    raise ModuleNotFoundError(
        f"{__file__} is rrr.verifiers: import it as such (a bare `import verifiers` found it only "
        "because the rrr repository root is on sys.path)",
        name=__name__,
    )

from rrr.verifiers.verdict import Verdict

__all__ = ["Verdict"]
