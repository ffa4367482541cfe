"""The core layer: what every other layer shares and nothing Ray-specific drives. Episodes
(episodes.py), the train batch (train_batch.py) and the GRPO maths (grpo.py), configs
(config.py), tasks (tasks/), metrics (metrics.py), placement (placement.py) and the weights'
wire protocol (weights/). It imports only rrr.verifiers and third-party packages."""
