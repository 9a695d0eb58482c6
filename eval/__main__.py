"""`python -m dim_tf.eval --model_dir DIR --attack pgd ...` (see dim_tf.eval.cli)."""

if __name__ == "__main__":
    from absl import app

    from dim_tf.eval.cli import define_flags, main

    define_flags()
    app.run(main)
