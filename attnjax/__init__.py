"""attnjax: the attention mechanism made runnable and measured, in JAX/Flax."""

__version__ = "0.1.0"
