"""DeepSpeed / torch learner actors, weight synchronisation and checkpoints."""
