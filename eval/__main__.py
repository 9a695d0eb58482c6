"""`python -m dim_tf.eval --model_dir DIR --attack pgd ...` (see dim_tf.eval.cli)."""

if __name__ == "__main__":
    from absl import flags

    from dim_tf import console
    from dim_tf.eval import cli
    from dim_tf.eval.cli import define_flags, main

    define_flags()
    flags.adopt_module_key_flags(cli)  # --help lists the flags
    console.run(main)
