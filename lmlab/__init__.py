"""lmlab: language-model experiments in JAX and Flax NNX."""

__version__ = "0.1.0"
