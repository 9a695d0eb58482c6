"""Results that accumulate: the paper suite's cells, kept across sessions (eval/README.md, "Cells").

A cell is one attack row of Tables 1/2 on one model variant: (weights fingerprint, variant, attack, norm, attack
settings), holding per-sample results for the first n test images in order. A later run reuses a cell when the
weights and settings match, and extends it to more images by attacking only the images it lacks.

One job per module: `store` (the cell files: keys, compact arrays, reading and writing), `index` (models.json:
which model dir's cells are which fingerprint; refuses a changed model), `plan` (which cells are missing, what
they will cost, the time budget), `extend` (attacking the images a cell lacks, chunk by chunk). NumPy only at
import; TensorFlow loads when `extend` attacks.
"""

from dim_tf.eval.cells import extend, index, plan, store  # noqa: E402,F401  (cells.store, cells.plan, ...)
