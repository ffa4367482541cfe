"""Layer 2, beside rrr.actors (neither imports the other): DeepSpeed / torch learner ranks as Ray
actors, the weight sync's sending half and the driver's link to the fleet, checkpoints."""
