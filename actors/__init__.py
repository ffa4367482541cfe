"""Layer 2, beside rrr.learner (neither imports the other): Ray actors around vLLM, the rollout
workers and their fleet, the weight-receiving endpoint, and the verifier pool."""

# The card keeps this folder at the top of the repository, so a bare `import actors` from the
# repository root (on sys.path there) would load it a second time under the wrong name.
if __name__ != "rrr.actors":
    raise ModuleNotFoundError(
        f"{__file__} is rrr.actors: import it as such (a bare `import actors` found it only "
        "because the rrr repository root is on sys.path)",
        name=__name__,
    )
