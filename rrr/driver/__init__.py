"""The driver layer: the `rrr` command line and the training loop, the only code that wires
rollout workers, verifiers, learners and weight sync together.

One module per command, named for it (`rrr build-failures` -> build_failures.py, `rrr eval` ->
evaluate.py, `rrr eval-general` -> eval_general.py, ...), each with `add_arguments(parser)` and
`run(args, cfg) -> int`; stack.py brings up what they share (Ray, model, task, actors).
Modules import vLLM, Ray and torch inside `run`, so `rrr --help` stays instant.

Dependencies point one way: verifiers <- rrr core <- actors, learner <- rrr.driver. No module
outside this package imports it (tests/test_layers.py checks).
"""
