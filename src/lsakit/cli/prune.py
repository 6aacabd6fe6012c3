"""``lsakit prune``: magnitude pruning of a trained run, then masked fine-tuning."""

from __future__ import annotations

from lsakit.cli._app import app, out
from lsakit.cli._derive import options_command
from lsakit.config.commands import PruneOptions

DOC = """Magnitude-prune a trained model, then fine-tune it with the mask fixed under the run's loss.

The run's config.yaml is reused (objective, regularizers, noise injection); the pruned
weights stay exactly zero through fine-tuning and in the checkpoints, and the sparsity
reported is counted from the saved weights.
"""


def run(options: PruneOptions) -> None:
    from lsakit.checkpoint import load_checkpoint
    from lsakit.config import load_run_config
    from lsakit.defenses.sparsity import sparsity_report
    from lsakit.train import train

    run_dir, sparsity = options.run_dir, options.sparsity
    config = load_run_config(run_dir)
    source = options.checkpoint
    if source is None:
        best = run_dir / "best.safetensors"
        source = best if best.exists() else run_dir / "model.safetensors"
    epochs = options.epochs if options.epochs is not None else max(1, config.epochs // 5)
    pruned = config.with_overrides(
        init_checkpoint=str(source), prune_sparsity=sparsity, prune_scope=options.scope,
        lr=options.lr, epochs=epochs,
    )  # fmt: skip
    target = options.out or run_dir / f"pruned-{sparsity:g}"
    out.print(f"pruning {source} to {sparsity:.0%} ({options.scope}), fine-tuning → {target}")
    result = train(
        pruned, target, device=options.device, data_dir=options.data_dir, progress=True,
        log=out.print, overwrite=options.overwrite,
    )  # fmt: skip
    saved = result.best_checkpoint or result.checkpoint
    assert saved is not None
    model, _ = load_checkpoint(saved, model=config.model)
    report = sparsity_report(model)
    out.print(
        f"{saved}: {report['zeros']:,} of {report['total']:,} conv/linear weights are zero "
        f"(sparsity {report['sparsity']:.2%}, counted from the saved weights)"
    )


options_command(app, "prune", PruneOptions, run, DOC)
