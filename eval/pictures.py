"""Pictures of a paper suite (PNG, matplotlib):

- `curves.png`: accuracy vs eps per norm, every model variant on one plot. The curves come from the per-sample
  worst-case distances in `suite.json` (the smallest adversarial any attack found): minimal attacks (C&W, DDN,
  DeepFool, Brendel-Bethge, Boundary, Pointwise) give each sample's distance at any size, bounded ones (PGD, BIM,
  FGSM/FGM) only a success at the threshold, so beyond the threshold only the minimal attacks count. No extra eps
  sweep is run. Dashed: the variant's curve includes gradient-masked attacks (exact binarization).
- `grid-MODEL.png` (DIM family): for a few test digits, the clean image and an L-inf PGD adversarial (eps 0.3, the
  paper's threshold), each with the denoised image D(x) and the ten internal models' reconstructions F_i(D(x)),
  titled with the scores P_i (the predicted class in red).
- `tsne-MODEL.png` (DIM family): t-SNE of the ten 10-d latent spaces of the internal models on test images,
  coloured by digit (paper Figure 3), by scikit-learn's t-SNE (`tsne`; the `plots` extra installs it).

Regenerate from an existing suite: `python -m dim_tf.eval.pictures --suite_dir DIR [--model_dir runs/dim]`.
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np

from dim_tf import console
from dim_tf.eval import aggregate, paper_numbers as paper
from dim_tf.eval.threat import EvalError

TSNE_EXAMPLES = 1000  # test images in the t-SNE plot
GRID_DIGITS = 4
CURVE_RANGE = {"l2": 4.0, "linf": 0.6, "l0": 40.0, "l1": 25.0}  # x-axis end per norm


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    if not available():
        raise EvalError("pictures need matplotlib: pip install -e '.[plots]'")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    from dim_tf import model_dir as md

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with md.atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _pyplot().close(fig)
    return path


# ------------------------------------------------------------------------------------------------------------------
# Accuracy vs eps
# ------------------------------------------------------------------------------------------------------------------

def curves(summary: dict, path: str, points: int = 201) -> str:
    """Accuracy vs eps per norm (one panel each), a line per model variant of the suite summary; returns path."""
    plt = _pyplot()
    norms = [n for n in paper.NORM_ORDER if any(n in c["all"] for c in summary["columns"])]
    if not norms:
        raise EvalError("the suite summary holds no worst-case results to plot")
    fig, axes = plt.subplots(1, len(norms), figsize=(4.2 * len(norms), 3.8), squeeze=False,
                             layout="constrained")
    for ax, norm in zip(axes[0], norms):
        eps = np.linspace(0.0, CURVE_RANGE[norm], points)
        for col in summary["columns"]:
            worst = col["all"].get(norm)
            if worst is None:
                continue
            distance = np.array([np.inf if d is None else d for d in worst["distance"]])
            label = col["label"] + (" \u2020masked" if worst["masked"] else "")
            ax.plot(eps, 100 * aggregate.accuracy_curve(distance, eps), label=label,
                    linestyle="--" if worst["masked"] else "-")
        threshold = summary["thresholds"][norm]
        ax.axvline(threshold, color="grey", linestyle=":", linewidth=1)
        ax.set(title=f"{paper.NORM_LABELS[norm]} (paper threshold {threshold:g})", xlabel=f"{norm} eps",
               ylabel="accuracy (%)", ylim=(0, 100), xlim=(0, CURVE_RANGE[norm]))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"Worst case over the paper's attacks, first {summary['num_examples']} test images "
                 "(beyond the threshold: minimal attacks only)", fontsize=10)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------------------------
# Reconstructions
# ------------------------------------------------------------------------------------------------------------------

def _check_dim(model) -> None:
    from dim_tf.models import DIM

    if not isinstance(model, DIM):
        raise EvalError(f"reconstruction and latent pictures need a DIM-family model, not {type(model).__name__}")


def adversarial(model, images: np.ndarray, labels: np.ndarray, eps: float = 0.3) -> np.ndarray:
    """L-inf PGD (the attack table's defaults) at eps against `model`: [B, 28, 28, 1] -> same, in the ball."""
    import tensorflow as tf

    from dim_tf.eval import attacks
    from dim_tf.eval.threat import ThreatModel, project

    row = attacks.get("pgd")
    raw = row.fn(model, tf.constant(images), tf.constant(labels), eps, ThreatModel.LINF, row.resolve_params({}), 0)
    return project(np.asarray(raw), images, ThreatModel.LINF, eps)


def reconstruction_grid(model, images: np.ndarray, labels: np.ndarray, adv: np.ndarray, path: str) -> str:
    """For each digit two rows (clean, adversarial): input | D(input) | F_0..F_9 reconstructions with scores."""
    _check_dim(model)
    plt = _pyplot()
    both = np.concatenate([images, adv])
    d = np.asarray(model.denoise(both))
    recon = np.asarray(model.internal(d))  # [2B, K, 28, 28, 1]
    scores = np.asarray(model.scores_from(d, recon))
    b, k = len(images), recon.shape[1]
    fig, axes = plt.subplots(2 * b, k + 2, figsize=(1.15 * (k + 2), 1.35 * 2 * b), squeeze=False,
                             layout="constrained")
    for i in range(b):
        for j, kind in enumerate(("clean", "adv")):
            r, src = 2 * i + j, j * b + i
            pred = int(np.argmax(scores[src]))
            panels = [(both[src], f"{kind} y={labels[i]}\npred {pred}"), (d[src], "D(x)")]
            panels += [(recon[src, c], f"F{c}: {scores[src, c]:.2f}") for c in range(k)]
            for c, (img, title) in enumerate(panels):
                ax = axes[r][c]
                ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                red = (c == 0 and pred != labels[i]) or c == pred + 2
                ax.set_title(title, fontsize=7, color="red" if red else "black")
    fig.suptitle("clean and L-inf PGD (eps 0.3) inputs, denoised, and the ten internal models' reconstructions "
                 "(title: score P_i; red: predicted class)", fontsize=9)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------------------------
# t-SNE (van der Maaten & Hinton 2008): scikit-learn's
# ------------------------------------------------------------------------------------------------------------------

def tsne(x: np.ndarray, perplexity: float = 30.0, iterations: int = 500, seed: int = 0) -> np.ndarray:
    """x [N, D] -> [N, 2] embedding by scikit-learn's `TSNE` (Barnes-Hut, PCA initialisation, learning rate
    'auto'); the perplexity is capped at (N-1)/3, the iterations raised to scikit-learn's minimum of 250."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise EvalError("the t-SNE picture needs scikit-learn: pip install -e '.[plots]'") from None
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    n = len(x)
    if n < 4:
        raise EvalError(f"t-SNE needs at least 4 points, got {n}")
    embedding = TSNE(n_components=2, perplexity=min(perplexity, (n - 1) / 3.0), max_iter=max(int(iterations), 250),
                     init="pca", learning_rate="auto", random_state=seed)
    return embedding.fit_transform(x).astype(np.float64)


def latents(model, images: np.ndarray, batch_size: int = 250) -> np.ndarray:
    """The internal models' latents of D(x): [N, K, latent_dim] ([N, 1, latent_dim] with a shared encoder)."""
    _check_dim(model)
    out = []
    for i in range(0, len(images), batch_size):
        z = np.asarray(model.internal.encode(model.denoise(images[i:i + batch_size])))
        out.append(z[:, None] if z.ndim == 2 else z)
    return np.concatenate(out)


def latent_tsne(model, images: np.ndarray, labels: np.ndarray, path: str, seed: int = 0) -> str:
    """Paper Figure 3: a t-SNE panel per latent space (autoencoder F_i), points coloured by their digit."""
    plt = _pyplot()
    z = latents(model, images)
    spaces = z.shape[1]
    cols = min(spaces, 5)
    rows = -(-spaces // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False,
                             layout="constrained")
    cmap = plt.get_cmap("tab10")
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= spaces:
            ax.axis("off")
            continue
        y = tsne(z[:, i], seed=seed)
        for digit in range(10):
            mask = labels == digit
            ax.scatter(y[mask, 0], y[mask, 1], s=3, color=cmap(digit), label=str(digit))
        ax.set_title(f"latent space of F{i}" if spaces > 1 else "shared latent space", fontsize=9)
    axes[0][-1].legend(fontsize=7, markerscale=3, loc="upper right", ncol=2)
    fig.suptitle(f"t-SNE of the internal models' 10-d latents, {len(images)} test images (colour: digit)",
                 fontsize=10)
    return _save(fig, path)


def model_pictures(model, test, output_dir: str, slug: str, tsne_examples: int = TSNE_EXAMPLES,
                   digits: int = GRID_DIGITS, seed: int = 0) -> list[str]:
    """The reconstruction grid and the latent t-SNE of a DIM-family `model` on the `test` split (first images);
    returns the paths written."""
    _check_dim(model)
    images, labels = test.images[:digits], test.labels[:digits]
    grid = reconstruction_grid(model, images, labels, adversarial(model, images, labels),
                               os.path.join(output_dir, f"grid-{slug}.png"))
    n = min(tsne_examples, len(test))
    return [grid, latent_tsne(model, test.images[:n], test.labels[:n], os.path.join(output_dir, f"tsne-{slug}.png"),
                              seed)]


# ------------------------------------------------------------------------------------------------------------------
# python -m dim_tf.eval.pictures
# ------------------------------------------------------------------------------------------------------------------

def main(argv) -> int:
    import sys

    from absl import flags

    opts = flags.FLAGS
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}; every setting is a --flag", file=sys.stderr)
        return 2
    try:
        out = opts.output_dir or opts.suite_dir
        written = []
        if opts.suite_dir:
            path = os.path.join(opts.suite_dir, "suite.json")
            if not os.path.exists(path):
                raise EvalError(f"{path} does not exist: run `python -m dim_tf.eval --suite paper --output_dir "
                                f"{opts.suite_dir} ...` first")
            with open(path) as f:
                written.append(curves(json.load(f), os.path.join(out, "curves.png")))
        elif not opts.model_dir:
            raise EvalError("give --suite_dir (curves) and/or --model_dir with --output_dir (grid, t-SNE)")
        if opts.model_dir:
            if not out:
                raise EvalError("--model_dir needs --output_dir or --suite_dir (where the pictures go)")
            from dim_tf import data, model_dir as md

            _pyplot()
            model, manifest = md.load(opts.model_dir)
            _check_dim(model)
            test = data.load(manifest.get("dataset", "mnist"), data.data_dir_for(opts.data_dir, manifest)).test
            written += model_pictures(model, test, out, os.path.basename(os.path.normpath(opts.model_dir)),
                                      opts.tsne_examples, opts.digits, opts.seed)
    except ValueError as e:  # EvalError, ModelDirError, DataError
        return console.refuse(e)
    for path in written:
        print(f"picture -> {path}")
    return 0


def define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("suite_dir", None, "Output dir of a paper suite (holds suite.json): draws curves.png.")
    flags.DEFINE_string("model_dir", None, "A DIM-family model dir: draws grid-NAME.png and tsne-NAME.png.")
    flags.DEFINE_string("output_dir", None, "Where the PNGs go (default: --suite_dir).")
    flags.DEFINE_string("data_dir", None, "Folder with the MNIST IDX files (else $DIM_TF_DATA_DIR, manifest, tfds).")
    flags.DEFINE_integer("tsne_examples", TSNE_EXAMPLES, "Test images in the t-SNE.")
    flags.DEFINE_integer("digits", GRID_DIGITS, "Test digits in the reconstruction grid.")
    flags.DEFINE_integer("seed", 0, "t-SNE seed.")


if __name__ == "__main__":
    define_flags()
    console.run(main)
