"""dim_tf: Denoised Internal Models in Keras/TensorFlow. `pip install -e .[test]`."""

from setuptools import find_packages, setup

# eval/ and export/ sit at the top of the repository but install as dim_tf.eval and dim_tf.export,
# so no generic top-level `eval` or `export` package lands in site-packages.
SUBPACKAGES = {"dim_tf.eval": "eval", "dim_tf.export": "export"}

packages = find_packages(include=["dim_tf", "dim_tf.*"])
for name, folder in SUBPACKAGES.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(where=folder)]

setup(
    name="dim_tf",
    version="0.1.0",
    description="Denoised Internal Models (DIM/biDIM): an adversarially robust MNIST classifier in Keras/TensorFlow",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir={"": ".", **SUBPACKAGES},
    # the web page (python -m dim_tf.web): its static files and the npm lockfile that pins LiteRT.js
    package_data={"dim_tf.web": ["static/*", "npm/package.json", "npm/package-lock.json"]},
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "keras>=3.3,<3.16",
        "numpy>=1.26,<2.5",
        "absl-py>=1.0",
        "tensorboard>=2.16",
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # tensorflow-datasets 4.9.10 imports it but declares it only for old Pythons
        # The paper's attack library; 3.3.4 needs NumPy 2's missing np.find_common_type (dim_tf.eval.foolbox_compat).
        "foolbox==3.3.4",
        "eagerpy==0.30.0",
        "numba>=0.60",  # foolbox's Brendel-Bethge attacks (their trust-region solvers are numba-compiled)
    ],
    extras_require={
        # cleverhans 4.0.0 (2021) declares stale dependencies (nose, mnist, tensorflow-probability); .ci/run and
        # README install it with --no-deps: dim_tf uses only its tf2 attacks.
        "lite": ["ai-edge-litert>=2.3", "pillow"],  # on-device runtime (dim_tf.lite): no TensorFlow needed
        "plots": ["matplotlib>=3.7", "scikit-learn>=1.5"],  # pictures of the paper suite (dim_tf.eval.pictures; t-SNE)
        # --suite autoattack: AutoAttack's APGD and Square through ART (pinned: eval/suites/autoattack patches one
        # expression of its 1.20.1 Square and refuses another version's source)
        "autoattack": ["adversarial-robustness-toolbox==1.20.1"],
        # python -m dim_tf.web: the site builder (also needs npm); playwright drives the system's Chromium for
        # --check, the benchmark and tests/test_web.py (never `playwright install`: no browser download)
        "web": ["ai-edge-litert>=2.3", "pillow", "playwright>=1.40"],
        "test": ["pytest>=7", "ai-edge-litert>=2.3", "pillow", "matplotlib>=3.7", "scikit-learn>=1.5",
                 "playwright>=1.40", "adversarial-robustness-toolbox==1.20.1"],
    },
)
