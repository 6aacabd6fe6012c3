"""``lsakit evaluate``: :func:`lsakit.workflows.evaluate`, its tables and files."""

from __future__ import annotations

from lsakit.cli._app import app, main_rank, out, say
from lsakit.cli._derive import options_command
from lsakit.config.workflows import EvaluateOptions

DOC = """The paper's protocol: FGSM accuracy over an ε sweep and its R&G score, plus PGD / APGD.

With --suite, the attack suite instead: robust accuracy after each attack and combined
(per-sample worst case), resumable, followed by the gradient-masking checks.
"""


def run(options: EvaluateOptions) -> None:
    from lsakit.cli.tables import print_evaluation, print_suite
    from lsakit.train import resolve_device
    from lsakit.workflows.evaluate import RESULT_FILE, evaluate, output_dir, suite_tag

    main_rank(resolve_device(options.device))
    given = options.given()
    result = evaluate(log=say, **given)
    model, dataset = result.meta["model"], result.meta["dataset"]
    folder = output_dir(options)
    if options.suite is not None:
        eps = result.eps
        print_suite(result, options.suite, model, dataset, eps)
        out.print(f"wrote {folder / (suite_tag(options.suite, eps, result.n_examples) + '.json')}")
        return
    print_evaluation(result, model, dataset)
    out.print(f"wrote {folder / RESULT_FILE}")


options_command(app, "evaluate", EvaluateOptions, run, DOC)
