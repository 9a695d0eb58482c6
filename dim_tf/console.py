"""What the `python -m dim_tf....` programs share: a quiet start, `--help` that exits 0, Ctrl-C as one line, bad
input refused in one line (`refuse`) while a library's failure mid-run keeps its traceback.

A quiet start: TensorFlow prints its C++ start-up notes (absl's "before InitializeLog" banner, CUDA probing on a
machine without GPUs, oneDNN and CPU-feature notes) at import, whatever TF_CPP_MIN_LOG_LEVEL says, and LiteRT
prints an XNNPACK INFO line per interpreter. `quiet_stderr` drops such lines at the file-descriptor level and
passes every other line on; `startup` (run by `dim_tf/__init__.py` when Python starts one of the TensorFlow
programs below) imports TensorFlow inside it and lowers absl's Python logging to warnings (TensorFlow's checkpoint
writer logs a line per save at INFO; `--verbosity 0` brings INFO back). `TF_CPP_MIN_LOG_LEVEL=0` turns the
filtering off. No TensorFlow import here: `dim_tf.lite` uses this module.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import tempfile
import threading

# The programs that run TensorFlow (the others, e.g. dim_tf.lite, must start without it).
# The speed tools are dim_tf.bench.*; their earlier names (dim_tf.benchmark, ...) still run them.
TENSORFLOW_PROGRAMS = ("dim_tf.train", "dim_tf.eval", "dim_tf.eval.pictures", "dim_tf.bench.inference",
                       "dim_tf.bench.abs_vs_dim", "dim_tf.bench.training", "dim_tf.bench.bundle", "dim_tf.benchmark",
                       "dim_tf.abs_benchmark", "dim_tf.train_benchmark", "dim_tf.export", "dim_tf.export.benchmark",
                       "dim_tf.export.robustness")
NOISE = re.compile("|".join([
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"I\d{4} [\d:.]+ +\d+ \S+:\d+\] ",  # C++ INFO lines (while TensorFlow starts)
    r"To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags",
    r"E\d{4} [\d:.]+ +\d+ cuda_\w+\.cc:\d+\] failed call to cuInit",
    r"[EW]\d{4} .*(Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT)",
    r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.",
]))
_STDERR_LOCK = threading.RLock()
HELP_FLAGS = ("-h", "-?", "--help", "-help", "--helpshort", "-helpshort", "--helpfull", "-helpfull", "--helpxml",
              "-helpxml")


@contextlib.contextmanager
def quiet_stderr(noise: re.Pattern = NOISE):
    """Drops the lines matching `noise` that this process (C++ code included) writes to stderr inside the block;
    the other lines are written on when it ends. No filtering when TF_CPP_MIN_LOG_LEVEL is 0."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    with _STDERR_LOCK, tempfile.TemporaryFile() as capture:  # one thread at a time moves fd 2
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().splitlines(keepends=True)
            kept = b"".join(line for line in lines if not noise.match(line.decode("utf-8", "replace")))
            if kept:
                os.write(2, kept)


def _program() -> str | None:
    """The module named after -m on this process's command line."""
    argv = getattr(sys, "orig_argv", [])
    for i, arg in enumerate(argv[1:], 1):
        if arg == "-m":
            return argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith("-m"):
            return arg[2:]
    return None


def startup() -> None:
    """Quiet start of a TensorFlow program (see the module docstring); called before the program imports."""
    if _program() not in TENSORFLOW_PROGRAMS:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()  # probes CUDA (the cuInit line) without starting the runtime
    from absl import app, flags, logging

    app.call_after_init(lambda: None if flags.FLAGS["verbosity"].present else logging.set_verbosity(logging.WARNING))


def run(main) -> None:
    """absl's `app.run(main)`, except that `--help` exits 0 (absl exits 1) and Ctrl-C ends with one line
    (exit code 130) instead of a traceback."""
    from absl import app

    try:
        app.run(main)
    except SystemExit as e:
        if e.code == 1 and any(arg.split("=")[0] in HELP_FLAGS for arg in sys.argv[1:]):
            raise SystemExit(0) from None
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def _project_folders() -> tuple[str, ...]:
    """The folders of this project's packages (dim_tf and its eval and export, wherever they are installed)."""
    here = os.path.dirname(os.path.abspath(__file__))
    found = [importlib.util.find_spec(name) for name in ("dim_tf.eval", "dim_tf.export")]
    return (here, *(os.path.dirname(spec.origin) for spec in found if spec and spec.origin))


def _raised_here(error: BaseException) -> bool:
    """Whether `error` was raised by this project's own code (a refusal: bad flags, a wrong model dir, ...) rather than
    inside TensorFlow, Keras, NumPy or another library."""
    tb = error.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    path = os.path.abspath(tb.tb_frame.f_code.co_filename)
    return any(path.startswith(folder + os.sep) for folder in _project_folders())


def refuse(error: Exception) -> int:
    """Call in the `except` of a program's main: bad input that this project's code refused becomes its one
    `error: ...` line on stderr and exit code 2. A ValueError raised inside a library (e.g. TensorFlow failing while
    it traces an attack, an hour into a suite) is raised again with its traceback, which is what locates it: as one
    line it read `error: in user code:` and named nothing."""
    if isinstance(error, ValueError) and not _raised_here(error):
        raise error
    print(f"error: {error}", file=sys.stderr)
    return 2
