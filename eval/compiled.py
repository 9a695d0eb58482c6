"""tf.functions made once per model object and dropped with it.

Attacks call one model thousands of times per batch (foolbox: eagerly, Keras is ~2x slower than a compiled call),
and a suite calls `run_attack` once per attack row and eps: a tf.function made anew each time traces the model anew
(TensorFlow's retracing warning all through a suite's log). The cache holds each model weakly and its functions
reach the model through a weak reference, so an entry goes when its model does (a function holding its model would
keep every model an attack ever counted alive, with its traces, for the rest of the process).
"""

from __future__ import annotations

import weakref
from typing import Callable

import tensorflow as tf

_functions: "weakref.WeakKeyDictionary[Callable, dict]" = weakref.WeakKeyDictionary()


def _call(model: Callable, batch):
    return model(batch)


def compiled(model: Callable, body: Callable = _call) -> Callable:
    """`body(model, batch)` (default: `model(batch)`) as a tf.function, made once per model and body (a module-level
    function, so that it is the same object on every call)."""
    try:
        per_model = _functions.setdefault(model, {})
    except TypeError:  # not weak-referenceable: compiled for this call only
        return tf.function(lambda batch: body(model, batch), reduce_retracing=True)
    function = per_model.get(body)
    if function is None:
        ref = weakref.ref(model)
        function = per_model[body] = tf.function(lambda batch: body(ref(), batch), reduce_retracing=True)
    return function
