"""The weight sync's wire protocol, shared by its two halves (the learner's sender and the vLLM
workers' receiver), so that neither imports the other's package:

- `backend.py`: which transport a sync takes (collective over NCCL/gloo, or the object store),
  decided from where the weights live; `collective_backend`, the one NCCL-or-gloo rule;
- `wire.py`: the bucket plan, and packing named tensors into flat byte buckets and back;
- `group.py`: joining and leaving the broadcast group.

The driver's side (connect, push, recovery) is learner/weight_sync.py.
"""
