"""The exported graph: a Keras wrapper (`make_head`) around the trained model computing what the bundle outputs, and
its SavedModel (`saved_model`), which `dim_tf.export.convert` turns into TFLite files.

The graph (`serving_default`, input `image` [N, 28, 28, 1]):
  * the DIM family outputs `numerators` [N, K] = sum(F_i(D(x))), `denominator` [N] = sum(D(x)) and `label` [N];
    the runtime divides (scores = numerators / max(denominator, 1)): an int8 DIV aborts the interpreter when its
    divisor quantises to zero (a black image). argmax(numerators) equals argmax(scores): the divisor is shared.
  * other classifiers (CNN, Madry) output `scores` [N, K] (logits) and `label` [N].
  * speed (the same functions, checked by the float-vs-Keras comparison): the denoiser's transposed convolutions
    become pad + CONV_2D + DEPTH_TO_SPACE (`transpose_conv`; with a resizable batch TFLite's TRANSPOSE_CONV gets
    its output shape at run time and stays out of the XNNPACK delegate), and the two convolutions that read the
    one-channel image become SPACE_TO_DEPTH + a stride-1 CONV_2D (`image_conv`). Figures: docs/export.md.
  * binarized variants (biDIM, biCNN) threshold the input at 0.5 in the graph. In the int8 file the rule is
    `x > 0.5` on the uint8 input's real value p/255 (TFLite's int8 comparison rescales with 8 fractional bits: `>=`
    turns pixel 127 on, `>` gives 127 -> 0, 128 -> 1 exactly); the float files keep Keras' `x >= 0.5`. D's
    output is binarized with `>= 0.5` as in Keras. Every export checks all 256 uint8 levels against black/white.
"""

from __future__ import annotations

import contextlib

SIGNATURE = "serving_default"
INPUT_NAME = "image"
DIM_SCORES = "numerators / max(denominator, min_denominator)"  # what the runtime computes from the DIM outputs


def internal_per_class(internal, d):
    """`InternalModels(d)` with each class's dense layers as their own matmul: [B, 28, 28, 1] -> [B, K, 28, 28, 1].

    Keras runs the K class-wise dense layers as one einsum, which TFLite turns into BATCH_MATMUL with one
    (per-tensor) scale for all K weight sets; K plain matmuls become FULLY_CONNECTED ops whose int8 weights get a
    scale per output channel. Same function in float (checked by the export's float-vs-Keras comparison).
    """
    import tensorflow as tf

    from dim_tf.models import ClassWiseDense

    k_classes = internal.num_classes

    def dense(layer, k, x):
        kernel = layer.kernel[k] if isinstance(layer, ClassWiseDense) else layer.kernel
        bias = layer.bias[k] if isinstance(layer, ClassWiseDense) else layer.bias
        return layer.activation(tf.matmul(x, kernel) + bias)

    h = image_conv(internal.stem, d)
    if internal.shared_encoder:
        h = tf.reshape(h, [-1, h.shape[1] * h.shape[2] * h.shape[3]])
        z = internal.enc_latent(internal.enc_hidden(h))
        latents = [z] * k_classes
    else:
        h = tf.reshape(h, [-1, h.shape[1] * h.shape[2], k_classes, internal.stem_filters])
        latents = []
        for k in range(k_classes):
            hk = tf.reshape(h[:, :, k, :], [-1, h.shape[1] * internal.stem_filters])
            latents.append(dense(internal.enc_latent, k, dense(internal.enc_hidden, k, hk)))
    outs = [dense(internal.dec_out, k, dense(internal.dec_hidden, k, latents[k])) for k in range(k_classes)]
    return tf.reshape(tf.stack(outs, axis=1), [-1, k_classes, *internal.image_shape])


def transpose_conv(layer, x):
    """`layer` (a Conv2DTranspose) on x; kernel 3, stride 2, "same" as pad + 2x2 Conv2D + DEPTH_TO_SPACE.

    The same function with static shapes: TFLite's TRANSPOSE_CONV reads its output shape from a tensor computed
    from the batch size at run time, which keeps it (and the shape ops feeding it) out of the XNNPACK delegate.
    Output pixel (2i + a, 2j + b) sums input rows i - 1, i and columns j - 1, j: an even a uses kernel rows 2 (input
    row i - 1) and 0 (row i), an odd a row 1 (row i) only; likewise for columns. Other configurations: layer(x).
    """
    import tensorflow as tf

    if (tuple(layer.kernel_size), tuple(layer.strides), layer.padding, tuple(layer.dilation_rate),
            layer.data_format) != ((3, 3), (2, 2), "same", (1, 1), "channels_last"):
        return layer(x)
    kernel = layer.kernel  # [3, 3, out, in]
    taps = ((2, 0), (None, 1))  # by output parity: kernel index for input offsets -1 and 0 (None: no tap)
    zeros = tf.zeros([kernel.shape[3], kernel.shape[2]])
    blocks = [tf.stack([tf.stack([zeros if ta is None or tb is None else tf.transpose(kernel[ta, tb])
                                  for tb in taps[b]]) for ta in taps[a]])
              for a in (0, 1) for b in (0, 1)]  # each [2, 2, in, out]; channel block (2a + b) of the output
    y = tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 0], [1, 0], [0, 0]]), tf.concat(blocks, axis=-1), 1, "VALID")
    if layer.use_bias:
        y = y + tf.tile(layer.bias, [4])
    return layer.activation(tf.nn.depth_to_space(y, 2))


def image_conv(layer, x):
    """`layer` (a Conv2D, odd kernel, stride 2, "same") on a one-channel x [B, H, W, 1] (H, W even), as
    SPACE_TO_DEPTH(2) + a stride-1 convolution over the 2x2 blocks: the same function.

    XNNPACK runs a convolution with one input channel at a fraction of its usual speed (the 5x5 stem of the internal
    models took twice as long as this form). Output row i sums input rows 2i + a - pad (a = 0..k-1, pad = (k - 2)
    // 2); row 2(i + o) + p is channel p of block row i + o, so block offset o and parity p take kernel row
    2o + p + pad when that lies in 0..k-1 (else zero); likewise for columns. Other configurations: layer(x).
    """
    import tensorflow as tf

    k = tuple(layer.kernel_size)
    if (x.shape[-1], k[0] % 2, k[0] == k[1], tuple(layer.strides), layer.padding, tuple(layer.dilation_rate),
            x.shape[1] % 2, x.shape[2] % 2) != (1, 1, True, (2, 2), "same", (1, 1), 0, 0):
        return layer(x)
    size, pad = k[0], (k[0] - 2) // 2

    def tap(o: int, p: int) -> int | None:
        """The kernel row (column) of block offset o and parity p; None outside the kernel."""
        a = 2 * o + p + pad
        return a if 0 <= a < size else None

    def weight(o: int, q: int, p: int, r: int):
        a, b = tap(o, p), tap(q, r)
        return zeros if a is None or b is None else layer.kernel[a, b, 0]

    offsets = [o for o in range(-size, size) if tap(o, 0) is not None or tap(o, 1) is not None]
    zeros = tf.zeros([layer.kernel.shape[-1]])
    kernel = tf.stack([tf.stack([tf.stack([weight(o, q, p, r) for p in (0, 1) for r in (0, 1)])  # channel 2p + r
                                 for q in offsets]) for o in offsets])  # [n, n, 4, out]
    before, after = -offsets[0], offsets[-1]
    blocks = tf.pad(tf.nn.space_to_depth(x, 2), [[0, 0], [before, after], [before, after], [0, 0]])
    y = tf.nn.conv2d(blocks, kernel, 1, "VALID")
    return layer.activation(y + layer.bias if layer.use_bias else y)


def denoise(denoiser, x):
    """`Denoiser(x)` with the image convolution as `image_conv` and the transposed convolutions as
    `transpose_conv` (the same function; faster and static-shaped in TFLite)."""
    for layer in denoiser.encoder:
        x = image_conv(layer, x)  # layer(x) unless x has one channel
    for layer in denoiser.decoder:
        x = transpose_conv(layer, x)
    return x


def binarize_input(x, int8_input_rule: bool):
    """The input binarization baked into the graphs: x > 0.5 on the int8 graph's input, x >= 0.5 otherwise (see the
    module docstring for > vs >=)."""
    import tensorflow as tf

    return tf.where(x > 0.5, 1.0, 0.0) if int8_input_rule else tf.where(x >= 0.5, 1.0, 0.0)


def make_head(model, int8_input_rule: bool):
    """A Keras model computing the exported outputs of `model` (see the module docstring)."""
    import keras
    import tensorflow as tf

    from dim_tf.models import DIM, BinarizedInput

    if isinstance(model, DIM):
        kind, net, binarize = "dim", model, model.binarize
    elif isinstance(model, BinarizedInput):
        kind, net, binarize = "classifier", model.classifier, True
    else:
        kind, net, binarize = "classifier", model, False

    class ExportHead(keras.Model):
        def __init__(self):
            super().__init__(name="dim_tf_export")
            self.net = net

        def call(self, image):
            x = image
            if binarize:
                x = binarize_input(x, int8_input_rule)
            if kind == "classifier":
                scores = net(x)
                return {"scores": scores, "label": tf.argmax(scores, axis=1, output_type=tf.int32)}
            d = x
            if net.denoiser is not None:
                d = denoise(net.denoiser, d)
                if binarize:
                    d = tf.where(d >= 0.5, 1.0, 0.0)
            numerators = tf.reduce_sum(internal_per_class(net.internal, d), axis=[2, 3, 4])
            return {"numerators": numerators, "denominator": tf.reduce_sum(d, axis=[1, 2, 3]),
                    "label": tf.argmax(numerators, axis=1, output_type=tf.int32)}

    head = ExportHead()
    with warnings_quiet():  # Keras warns that the wrapper has no build(): it has no weights of its own
        head(tf.zeros([1, 28, 28, 1]))
    outputs = ["numerators", "denominator", "label"] if kind == "dim" else ["scores", "label"]
    return head, kind, binarize, outputs


def saved_model(head, path: str) -> None:
    import tensorflow as tf

    with warnings_quiet():
        head.export(path, format="tf_saved_model", verbose=False,
                    input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name=INPUT_NAME)])


@contextlib.contextmanager
def warnings_quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
