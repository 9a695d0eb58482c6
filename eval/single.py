"""One attack on one model (variant), written as one JSON: what `python -m dim_tf.eval --attack NAME` does.

Bad settings (unknown attack, norm or variant, an eps outside its norm's range, more examples than the test set
holds, an output that cannot be written, ...) are refused before the model or the data is touched (`EvalError`).
"""

from __future__ import annotations

from dim_tf.eval.settings import EvalSettings, check_run, parse_params
from dim_tf.eval.threat import EvalError


def validate(settings: EvalSettings) -> dict:
    """Checks every setting that needs neither the model nor the data; returns the attack row, the norm, the eps
    list and the resolved parameters. Raises `EvalError`."""
    from dim_tf import variants
    from dim_tf.eval import attacks, results
    from dim_tf.eval.threat import ThreatModel, parse_eps_list

    if not settings.attack:
        raise EvalError("--attack is required (`--attack list` prints the table)")
    if not settings.model_dir:
        raise EvalError("--model_dir is required")
    if settings.cells_dir or settings.max_minutes is not None:
        raise EvalError("--cells_dir and --max_minutes apply to --suite paper only (its cells); drop them")
    if settings.output_dir:
        raise EvalError("--output_dir applies to --suite only; one attack writes one JSON: give it with --output FILE")
    row = attacks.get(settings.attack)
    norm = ThreatModel.parse(settings.norm or "linf")
    if norm not in attacks.norms_covered():
        raise EvalError(f"no attack supports {norm.value} yet; covered: "
                        + ", ".join(sorted(n.value for n in attacks.norms_covered())))
    row.check_norm(norm)
    eps = parse_eps_list(settings.eps, norm)
    variants.check(settings.variant, settings.bi_gradient, EvalError)
    check_run(settings)
    params = row.resolve_params(parse_params(settings.params))
    if settings.output:
        results.check_output(settings.output)
    return {"row": row, "norm": norm, "eps": eps, "params": params}


def run(settings: EvalSettings, argv=None, log=print) -> dict:
    """Validates, loads the model (variant) and data, runs the attack, writes the JSON; returns the result. `argv`:
    the command line the result records."""
    checked = validate(settings)
    from dim_tf import data, distribute, model_dir as md, registry, variants
    from dim_tf.eval import attack_run, results

    strategy = distribute.strategy_from_flag(settings.strategy)
    with strategy.scope():
        model, manifest = md.load(settings.model_dir)
        model = registry.with_inference(model, settings.abs_samples, settings.abs_steps)
        attacked, variant_name = variants.choose(model, manifest, settings.variant, settings.bi_gradient,
                                                 EvalError)
    output = settings.output or results.default_output(settings.model_dir, variant_name, checked["row"].name,
                                                       checked["norm"].value)
    results.check_writable(output)
    dataset = data.load(manifest.get("dataset", "mnist"), data.data_dir_for(settings.data_dir, manifest))
    test = dataset.test.take(settings.num_examples)
    result = attack_run.run_attack(attacked, test.images, test.labels, checked["row"], checked["norm"],
                                   checked["eps"], batch_size=settings.batch_size, seed=settings.seed,
                                   restarts=settings.restarts, params=checked["params"], progress=settings.progress,
                                   strategy=strategy)
    results.annotate(result, model_dir=settings.model_dir, manifest=manifest, variant=settings.variant,
                     variant_name=variant_name, bi_gradient=settings.bi_gradient, dataset=dataset,
                     num_examples=len(test), strategy=settings.strategy, argv=argv)
    md.write_json(output, result)
    log(results.summary(result, output))
    return result
