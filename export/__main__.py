"""`python -m dim_tf.export --model_dir DIR --out BUNDLE [--variant {default,bi}] [--quantize {int8,float16,none}]`

Writes a verified TFLite bundle (see `dim_tf.export`) atomically: it is built in a hidden folder beside BUNDLE and
renamed into place only after both .tflite files have matched the Keras model on the test set; on any failure
nothing is left behind. Exit code 2 with a one-line reason (or the verification numbers) on failure.
"""

from __future__ import annotations

import os

from absl import flags

from dim_tf import console

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Registers the command-line flags (only when run as a program)."""
    from dim_tf.export import exporter as ex

    flags.DEFINE_string("model_dir", None, "Trained model folder (model.keras + manifest.json).")
    flags.DEFINE_string("out", None, "Bundle folder to write (must not exist unless --overwrite).")
    flags.DEFINE_enum("variant", "default", list(ex.VARIANTS),
                      "default: the model as trained; bi: its binarized variant (biDIM, biCNN), threshold 0.5 "
                      "baked into the graph.")
    flags.DEFINE_enum("quantize", "int8", list(ex.QUANTIZE),
                      "int8: full-integer model.tflite with uint8 input; float16: float16 weights; none: float32.")
    flags.DEFINE_string("data_dir", None, "Folder with the four LeCun IDX files (else $DIM_TF_DATA_DIR, else the "
                        "model's training data folder if it still exists, else tensorflow-datasets).")
    flags.DEFINE_integer("representative_samples", ex.DEFAULT_REPRESENTATIVE_SAMPLES,
                         "Training images used to calibrate the int8 ranges.")
    flags.DEFINE_integer("verify_images", None, "Test images used for verification (default: the full test set).")
    flags.DEFINE_float("max_accuracy_drop", ex.MAX_ACCURACY_DROP,
                       "Largest allowed |accuracy(tflite) - accuracy(keras)|, as a fraction.")
    flags.DEFINE_float("min_agreement", ex.MIN_AGREEMENT,
                       "Smallest allowed fraction of test images labelled as the Keras model labels them.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing bundle at --out.")
    flags.DEFINE_bool("views", False, "Also write model_views.tflite, the DIM family's D(x) and F_i(D(x)) for "
                      "pictures (the web page, `python -m dim_tf.web`, needs it; see dim_tf.export.views).")
    flags.mark_flags_as_required(["model_dir", "out"])


def main(argv) -> int:
    del argv
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # TensorFlow's SavedModel writer logs every step at INFO
    from dim_tf.export import exporter as ex

    try:
        meta = ex.export_bundle(FLAGS.model_dir, FLAGS.out, FLAGS.variant, FLAGS.quantize, FLAGS.data_dir,
                                FLAGS.representative_samples, FLAGS.verify_images,
                                ex.Checks(FLAGS.max_accuracy_drop, FLAGS.min_agreement), FLAGS.overwrite,
                                views=FLAGS.views)
    except ValueError as e:  # ExportError, ModelDirError, DataError: the reason, no traceback
        return console.refuse(e)
    acc = meta["accuracy"]
    sizes = ", ".join(f"{k} {v['bytes'] / 1e6:.2f} MB" for k, v in meta["files"].items() if k.endswith(".tflite"))
    quantized = "float32" if meta["quantize"] == "none" else meta["quantize"]
    line = (f"{meta['model_name']}: on {acc['test_images']} test images keras {acc['keras']:.4f}, {quantized} "
            f"{acc['quantized']:.4f} (agreement {acc['agreement_quantized_vs_keras']:.4f})")
    if acc["float"] is not None:
        line += f", float32 {acc['float']:.4f} (agreement {acc['agreement_float_vs_keras']:.4f})"
    print(f"{line}; {sizes}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    define_flags()
    console.run(main)
