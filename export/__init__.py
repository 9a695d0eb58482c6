"""TFLite export of trained models (installed as dim_tf.export)."""
