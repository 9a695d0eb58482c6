"""dim_tf: Denoised Internal Models (DIM, biDIM), their ablations and baselines in Keras/TensorFlow."""

__version__ = "0.1.0"
