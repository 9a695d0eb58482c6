"""Speed tools (how fast, not how robust: robustness is `dim_tf.eval`). One program each:

    python -m dim_tf.bench.inference --model_dirs runs/dim,runs/cnn    accuracy, batched throughput, FLOPs, % of peak
    python -m dim_tf.bench.abs_vs_dim --abs_dir runs/abs --dim_dir runs/dim    ABS vs DIM latency and throughput
    python -m dim_tf.bench.training --model dim --stage internal       training speed of one stage
    python -m dim_tf.bench.bundle --bundle bundles/bidim               an exported bundle's file sizes and latency

Their earlier names still run them: `python -m dim_tf.benchmark`, `dim_tf.abs_benchmark`, `dim_tf.train_benchmark`
and `dim_tf.export.benchmark`.
"""
