"""Recipes compose the layers below: `tfscale info`, the demo, config-driven training."""
