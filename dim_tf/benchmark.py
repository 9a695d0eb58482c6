"""`python -m dim_tf.benchmark`: the earlier name of `python -m dim_tf.bench.inference` (see `dim_tf.bench`), kept so
that the commands already cited in run logs and notes still work."""

if __name__ == "__main__":
    import runpy

    runpy.run_module("dim_tf.bench.inference", run_name="__main__", alter_sys=True)
