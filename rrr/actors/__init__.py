"""Ray actors: vLLM rollout workers and the verifier pool."""
