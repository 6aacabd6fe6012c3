"""End to end: `lsakit evaluate` on real MNIST, the paper's protocol and the attack suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli as run
from lsakit import data
from lsakit.checkpoint import load_checkpoint
from lsakit.cli import main
from lsakit.suite import SuiteResult, run_suite


@pytest.fixture(scope="module")
def mnist_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path
) -> tuple[Path, Path]:
    """Model B trained normally for one epoch on 4000 real MNIST images (through the CLI)."""
    run_dir = tmp_path_factory.mktemp("mnist")
    with pytest.raises(SystemExit) as done:
        main(["train", "-d", "mnist", "--epochs", "1", "--limit", "4000", "--batch-size", "50",
              "--out", str(run_dir), "--data-dir", str(shared_data)])  # fmt: skip
    assert done.value.code in (0, None)
    return run_dir / "model.safetensors", shared_data


def test_paper_protocol(mnist_checkpoint: tuple[Path, Path], capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    checkpoint, data_dir = mnist_checkpoint
    code, out, err = run(["evaluate", "--checkpoint", str(checkpoint), "--limit", "40",
                          "-a", "pgd=0.3,steps=5", "--out", str(tmp_path), "--data-dir",
                          str(data_dir)], capsys)  # fmt: skip
    assert code == 0, err
    assert "R&G" in out and "pgd" in out
    result = json.loads((tmp_path / "evaluation.json").read_text())
    assert result["n_samples"] == 40


def test_standard_suite_on_a_normal_model_gives_about_zero(  # type: ignore[no-untyped-def]
    mnist_checkpoint: tuple[Path, Path], capsys, tmp_path: Path
) -> None:
    checkpoint, data_dir = mnist_checkpoint
    args = ["evaluate", "--checkpoint", str(checkpoint), "--suite", "standard", "--n-examples",
            "40", "--batch-size", "16", "--out", str(tmp_path), "--data-dir", str(data_dir)]  # fmt: skip
    code, out, err = run(args, capsys)
    assert code == 0, err
    for label in ("APGD-CE", "APGD-T", "FAB-T", "Square", "standard suite (worst case)"):
        assert label in out
    assert "check gradients: pass" in out and "check eps-growth: pass" in out
    assert "warning" not in err
    result = SuiteResult.load(tmp_path / "suite-standard-eps0.3-n40.json")
    assert result.robust_accuracy == 0.0  # a normally trained model at MNIST ε = 0.3
    assert result.clean_accuracy > 0.6
    assert {c.name for c in result.checks} >= {"gradients", "eps-growth", "black-box"}
    # Run again: the finished state file is reused, with the same numbers.
    code, again, _ = run(args, capsys)
    assert code == 0 and "resuming from" in again
    assert (
        SuiteResult.load(tmp_path / "suite-standard-eps0.3-n40.json").fooled_by == result.fooled_by
    )


def test_the_cli_resumes_an_interrupted_suite(  # type: ignore[no-untyped-def]
    mnist_checkpoint: tuple[Path, Path], capsys, tmp_path: Path
) -> None:
    checkpoint, data_dir = mnist_checkpoint
    model, _ = load_checkpoint(checkpoint)
    x, y = data.load_tensors("mnist", "test", limit=30, data_dir=data_dir)
    state = tmp_path / "my.state.json"
    reference = run_suite(model, x, y, eps=0.3, suite="standard", batch_size=8)

    def stop(label: str, done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_suite(model, x, y, eps=0.3, batch_size=8, state_path=state, on_batch=stop)
    code, out, err = run(["evaluate", "--checkpoint", str(checkpoint), "--suite", "standard",
                          "--eps", "0.3", "--n-examples", "30", "--batch-size", "8", "--state",
                          str(state), "--no-checks", "--out", str(tmp_path), "--data-dir",
                          str(data_dir)], capsys)  # fmt: skip
    assert code == 0, err
    assert f"resuming from {state}" in out
    resumed = SuiteResult.load(tmp_path / "suite-standard-eps0.3-n30.json")
    assert resumed.fooled_by == reference.fooled_by
    assert resumed.checks == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--suite", "strong"], "error: unknown suite 'strong'; choose one of standard, rand"),
        (["--suite", "standard", "-a", "pgd=0.3"], "error: --suite runs its own attacks"),
        (["--eps", "0.3"], "error: --eps and --state belong to --suite"),
        (["--suite", "standard", "--eps", "-1"], "error: --eps must be > 0"),
    ],
)
def test_bad_suite_options_give_one_line(  # type: ignore[no-untyped-def]
    mnist_checkpoint: tuple[Path, Path], capsys, tmp_path: Path, extra: list[str], message: str
) -> None:
    checkpoint, data_dir = mnist_checkpoint
    code, _, err = run(["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path),
                          "--data-dir", str(data_dir), *extra], capsys)  # fmt: skip
    assert code == 2
    assert err.strip().startswith(message), err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_state_file_is_a_clear_error(  # type: ignore[no-untyped-def]
    mnist_checkpoint: tuple[Path, Path], capsys, tmp_path: Path
) -> None:
    checkpoint, data_dir = mnist_checkpoint
    state = tmp_path / "broken.json"
    state.write_text("{ truncated")
    code, _, err = run(["evaluate", "--checkpoint", str(checkpoint), "--suite", "standard",
                        "--n-examples", "5", "--state", str(state), "--out", str(tmp_path),
                        "--data-dir", str(data_dir)], capsys)  # fmt: skip
    assert code == 2
    assert "broken.json is not valid JSON" in err and "delete it" in err
    assert state.read_text() == "{ truncated"  # left as it was
