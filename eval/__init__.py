"""Evaluation of trained models (installed as dim_tf.eval)."""
