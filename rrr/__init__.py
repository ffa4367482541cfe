"""rrr: Reflect, Retry, Reward on Ray, vLLM and DeepSpeed.

One import name, five layers, one folder each; a module imports its own folder and the folders
below it, never one above and never a sibling (tests/test_layers.py):

    rrr.verifiers   the judges: model output -> Verdict (pure stdlib, hostile-input safe)
    rrr.core        episodes, GRPO maths, configs, tasks, metrics, the weights wire protocol
    rrr.actors      Ray actors around vLLM (rollout workers) and the verifier pool
    rrr.learner     Ray actors around DeepSpeed/torch (learner ranks), checkpoints, weight push
    rrr.driver      the `rrr` command line and the training loop, the only code that wires
                    actors and learners together
"""
