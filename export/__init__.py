"""TFLite export of trained models (installed as dim_tf.export).

    python -m dim_tf.export --model_dir runs/dim --out bundles/bidim --variant bi [--quantize int8]
    python -m dim_tf.export.benchmark --bundle bundles/bidim --model_dir runs/dim
    python -m dim_tf.export.robustness --bundle bundles/bidim --model_dir runs/dim

A bundle folder holds:
  model.tflite        int8 (full-integer; uint8 input 0..255, batch resizable) by default, or float16/float32
                      with --quantize float16/none; one `serving_default` signature, input `image` [N, 28, 28, 1]
  model_float.tflite  the float32 reference (absent with --quantize none: model.tflite is then the float model)
  labels.txt          the class names, one a line
  model_views.tflite  with --views, DIM family only: D(x) and F_i(D(x)) for pictures (`dim_tf.export.views`;
                      the web page, `python -m dim_tf.web`, needs it)
  bundle.json         input dtype/scale/zero point, threshold, output formula, model and training config, Keras /
                      float / int8 test accuracy and agreement, the files' sha256, library versions

`robustness` replays adversarials crafted on the Keras model on the .tflite files and runs a decision-based attack
on the int8 interpreter itself (see `dim_tf.export.robustness`); it writes BUNDLE/robustness.json.
Run a bundle with `dim_tf.lite` (no TensorFlow needed). The Python API is `dim_tf.export.exporter.export_bundle`;
its steps are `graph`, `convert`, `verify` and `publish` (export/README.md). This package's __init__ stays free of
TensorFlow imports: it holds the bundle's file names and the export's error.
"""

MODEL_FILE = "model.tflite"
FLOAT_FILE = "model_float.tflite"
LABELS_FILE = "labels.txt"


class ExportError(ValueError):
    """The export cannot run, or its result failed verification (the message carries the numbers)."""
