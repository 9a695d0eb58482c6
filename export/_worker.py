"""Child process of the export's verification: runs one model of an unpublished bundle through `dim_tf.lite`.

    python -m dim_tf.export._worker BUNDLE_DIR {quantized,float} IMAGES.npy OUT.npz

Writes scores [N, K], labels [N] and the model's input dtype/scale/zero point. Runs apart from the exporter so
that an aborting TFLite kernel (SIGABRT) cannot take the exporter, and its cleanup, down with it.
"""

import sys

import numpy as np

from dim_tf import lite


def main(argv) -> int:
    bundle_dir, which, images_path, out_path = argv
    bundle = lite.load_bundle(bundle_dir, which, num_threads=1)
    images = np.load(images_path, allow_pickle=False)
    raw = bundle.raw(images)
    scores = lite.scores_from_outputs(raw, bundle.meta["outputs"])  # NaN is reported by the exporter, not raised
    runner = bundle.runner
    np.savez(out_path, scores=scores, labels=raw["label"].astype(np.int64).reshape(-1),
             input_dtype=np.array(str(runner.input_dtype)),
             input_scale=np.array(runner.input_scale if runner.input_scale is not None else 0.0),
             input_zero_point=np.array(runner.input_zero_point if runner.input_zero_point is not None else 0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
