"""The builtin optimizers: AdamW, Adafactor, SGD and AdaX, registered through ``register_optimizers``."""
