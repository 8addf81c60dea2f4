from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetl.errors import ModelFileError, UserInputError
from edgetl.runtime import OnnxRuntimeRunner, load, softmax

REPO = Path(__file__).resolve().parents[2]


def _val_files(run: Path) -> tuple[list[Path], list[int]]:
    split = json.loads((run / "data/split.json").read_text())
    return [Path(split["root"]) / rel for rel, _ in split["val"]], [label for _, label in split["val"]]


def test_predictions_match_the_benchmarked_ones(built_run) -> None:
    """What a device computes from image files is exactly what the report measured."""
    run = built_run.run_dir
    files, _ = _val_files(run)
    results = json.loads((run / "benchmark/results.json").read_text())
    for artifact in ("onnx_int8", "onnx_fp32"):
        predictor = load(run, artifact=artifact)
        predicted = [p[0].index for p in predictor.predict(files)]
        assert predicted == results["artifacts"][artifact]["predictions"], artifact
        predictor.close()


def test_default_is_the_deployed_artefact_and_scores_are_probabilities(built_run) -> None:
    predictor = load(built_run.run_dir)
    assert predictor.runner.name == "onnx_int8"
    files, _ = _val_files(built_run.run_dir)
    top = predictor.predict(files[:2], top_k=2)
    assert [len(p) for p in top] == [2, 2]
    for predictions in top:
        assert predictions[0].score >= predictions[1].score
        assert sum(p.score for p in predictions) == pytest.approx(1.0, abs=1e-5)
        assert {p.label for p in predictions} == {"blues", "reds"}


def test_a_single_onnx_file_is_self_describing(built_run) -> None:
    predictor = load(built_run.run_dir / "models/model_int8.onnx")
    assert predictor.labels == ["blues", "reds"]
    files, _ = _val_files(built_run.run_dir)
    array = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(files[0]).convert("RGB"))
    assert predictor.predict([array])[0][0].label == predictor.predict([files[0]])[0][0].label


def test_bad_inputs_are_clear_errors(built_run, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="no such run directory"):
        load(tmp_path / "missing")
    with pytest.raises(ModelFileError, match="manifest.json missing"):
        load(tmp_path)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(ModelFileError, match="cannot load the model"):
        load(broken)
    predictor = load(built_run.run_dir)
    with pytest.raises(UserInputError, match="image not found"):
        predictor.predict([tmp_path / "nope.jpg"])
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    with pytest.raises(UserInputError, match="cannot decode image"):
        predictor.predict([text])
    with pytest.raises(UserInputError, match="cannot be loaded by the runtime"):
        load(built_run.run_dir, artifact="torch_fp32")


def test_fixed_batch_models_accept_any_batch(built_run, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(built_run.run_dir / "models/model_fp32.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 4
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, str(fixed))
    with OnnxRuntimeRunner(fixed) as runner:
        assert runner.fixed_batch == 4
        side = model.graph.input[0].type.tensor_type.shape.dim[-1].dim_value
        assert runner.infer_any_batch(np.zeros((6, 3, side, side), np.float32)).shape == (6, 2)


def test_softmax_is_stable() -> None:
    probabilities = softmax(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]]))
    np.testing.assert_allclose(probabilities, [[0.5, 0.5], [0.25, 0.75]])


def test_runtime_never_imports_torch(built_run) -> None:
    code = (
        "import sys\n"
        "from edgetl.runtime import load\n"
        f"p = load({str(built_run.run_dir)!r})\n"
        "import json, pathlib\n"
        f"split = json.loads(pathlib.Path({str(built_run.run_dir / 'data/split.json')!r}).read_text())\n"
        "print(p.predict([pathlib.Path(split['root']) / split['val'][0][0]])[0][0].label)\n"
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules, 'torch imported'\n"
        "print('torch-free')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert "torch-free" in result.stdout, result.stderr


def test_the_bytes_that_were_verified_are_the_bytes_that_run(built_run, tmp_path: Path, monkeypatch) -> None:
    """A model swapped for another between the hash check and the session (a racing symlink) changes nothing."""
    import shutil

    import numpy as np

    from edgetl.runtime import load, predictor

    run = tmp_path / "run"
    shutil.copytree(built_run.run_dir, run)
    split = json.loads((run / "data/split.json").read_text())
    images = [Path(split["root"]) / rel for rel, _ in split["val"][:4]]
    honest = load(run, artifact="onnx_int8")
    expected = honest.logits(honest.preprocessing.batch(images))
    honest.close()

    real_read_labels = predictor._read_labels

    def swap_then_read(path: Path) -> list[str]:  # runs after the check, before the session is made
        (run / "models/model_int8.onnx").write_bytes((run / "models/model_fp32.onnx").read_bytes())
        return real_read_labels(path)

    monkeypatch.setattr(predictor, "_read_labels", swap_then_read)
    raced = load(run, artifact="onnx_int8")
    try:
        assert np.array_equal(raced.logits(raced.preprocessing.batch(images)), expected)
    finally:
        raced.close()
