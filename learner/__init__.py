"""Layer 2, beside rrr.actors (neither imports the other): DeepSpeed / torch learner ranks as Ray
actors, the weight sync's sending half and the driver's link to the fleet, checkpoints."""

# The card keeps this folder at the top of the repository, so a bare `import learner` from the
# repository root (on sys.path there) would load it a second time under the wrong name.
if __name__ != "rrr.learner":
    raise ModuleNotFoundError(
        f"{__file__} is rrr.learner: import it as such (a bare `import learner` found it only "
        "because the rrr repository root is on sys.path)",
        name=__name__,
    )
