"""Layer 2, beside rrr.learner (neither imports the other): Ray actors around vLLM, the rollout
workers and their fleet, the weight-receiving endpoint, and the verifier pool."""
