"""mlpot eval's library function: a progress bar on stderr over the frames, silent when asked."""

from __future__ import annotations

from pathlib import Path

from mlpot.evaluate import evaluate_model_file

ETHANOL = Path(__file__).resolve().parents[1] / "systems" / "ethanol" / "dft.extxyz"


def test_evaluation_shows_a_frame_progress_bar_on_stderr_only_when_asked(model_files, capsys):
    from mlpot.data import DataSpec

    model = model_files[("egnn", "float32")]
    metrics, _ = evaluate_model_file(model, [ETHANOL], DataSpec(index=":4"), progress=True)
    captured = capsys.readouterr()
    assert metrics["frames"] == 4
    assert "eval:" in captured.err and "0/4 [" in captured.err and captured.out == ""
    evaluate_model_file(model, [ETHANOL], DataSpec(index=":4"), progress=False)
    assert "eval:" not in capsys.readouterr().err
