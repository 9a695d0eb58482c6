"""Keras models of the package: DIM and its parts, the ablations' building blocks, and the baselines."""

from dim_tf.models.abs import ABS
from dim_tf.models.binarize import Binarize
from dim_tf.models.cnn import CNN, BinarizedInput, MadryCNN
from dim_tf.models.denoiser import Denoiser
from dim_tf.models.dim import DIM
from dim_tf.models.internal import ClassWiseDense, InternalModels

__all__ = ["ABS", "Binarize", "BinarizedInput", "CNN", "ClassWiseDense", "DIM", "Denoiser",
           "InternalModels", "MadryCNN"]
