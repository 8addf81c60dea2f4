"""The fallback's price limit, QAT in the optimize stage, and the exit-3 refusal instead of a warning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgetl.measure.pricing import FallbackPricer
from edgetl.quantization.accuracy_aware import Price, TuningSet, accuracy_aware_quantize, predict
from edgetl.quantization.calibration import compute_ranges
from edgetl.quantization.qdq import QuantSettings
from tests.helpers import deep_merge, published_hashes, run_cli, write_profile
from tests.quantization.synthetic import images
from tests.quantization.test_calibration import ArrayReader, prepare_model


def _sensitive(tmp_path: Path):
    model = prepare_model(tmp_path)
    ranges = compute_ranges(model, ArrayReader(images(64, seed=1), 16), "minmax")
    tuning_images = images(128, seed=2)
    fp32 = predict(model, tuning_images)
    return model, ranges, TuningSet(tuning_images, fp32, fp32)


def _pricer(model: Path, tmp_path: Path, p50: dict[str, float], **limits) -> FallbackPricer:
    pricer = FallbackPricer(model, tmp_path / "all.onnx", images(1, seed=3), 1, **limits)
    pricer.latencies = lambda candidate: dict(p50)  # type: ignore[method-assign]
    return pricer


def test_a_fallback_that_costs_the_speed_up_is_refused(tmp_path: Path) -> None:
    model, ranges, tuning = _sensitive(tmp_path)
    # all-int8 is 2x fp32; the fallback that restores accuracy only 1.25x: below 0.8 x 2x = 1.6x.
    pricer = _pricer(model, tmp_path, {"fp32": 10.0, "all_int8": 5.0, "candidate": 8.0}, keep_speedup=0.8,
                     max_size_ratio=None)  # fmt: skip
    result = accuracy_aware_quantize(
        model, tmp_path / "int8.onnx", ranges, QuantSettings(), [], tuning, max_drop_points=5.0, price=pricer
    )
    assert result.triggered and result.priced_out and not result.within_budget
    priced = [a for a in result.attempts if a.price is not None]
    assert len(priced) == 1, "the search stops at the first model that meets accuracy but not the price"
    assert priced[0].price.speedup_vs_fp32 == pytest.approx(1.25) and not priced[0].price.within
    line = result.summary_line()
    assert "\n" not in line and "1.25x fp32 speed" in line and "1.60x" in line
    record = result.to_dict()
    assert record["priced_out"] is True and record["attempts"][1]["price"]["within"] is False


def test_the_same_fallback_within_the_price_is_shipped(tmp_path: Path) -> None:
    model, ranges, tuning = _sensitive(tmp_path)
    pricer = _pricer(model, tmp_path, {"fp32": 10.0, "all_int8": 5.0, "candidate": 5.5}, keep_speedup=0.8,
                     max_size_ratio=None)  # fmt: skip
    result = accuracy_aware_quantize(
        model, tmp_path / "int8.onnx", ranges, QuantSettings(), [], tuning, max_drop_points=5.0, price=pricer
    )
    assert result.within_budget and not result.priced_out
    assert result.final.price == Price(result.final.price.size_ratio, 10.0 / 5.5, 2.0, True, "")


def test_size_is_priced_without_timing_and_never_below_fp32_speed(tmp_path: Path) -> None:
    model, _, _ = _sensitive(tmp_path)
    pricer = _pricer(model, tmp_path, {"fp32": 10.0, "all_int8": 11.0, "candidate": 10.5}, keep_speedup=0.8,
                     max_size_ratio=0.5)  # fmt: skip
    too_big = pricer(model, True)  # the fp32 model itself: 1.0x the size
    assert not too_big.within and too_big.speedup_vs_fp32 is None and "size" in too_big.reason
    pricer.max_size_ratio = None
    # int8 slower than fp32 on this CPU (0.91x): the floor is fp32 speed, not 0.8 x 0.91x.
    slow = pricer(model, True)
    assert not slow.within and "< 1.00x" in slow.reason


@pytest.fixture()
def copied_run(built_run, tmp_path: Path) -> tuple[Path, dict]:
    run = tmp_path / "run"
    shutil.copytree(built_run.run_dir, run)
    profile = yaml.safe_load((built_run.run_dir / "profile.yaml").read_text())
    return run, deep_merge(profile, {"output_dir": str(run)})


def test_build_refuses_with_exit_3_and_one_line_when_nothing_meets_budget_and_price(
    copied_run, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import edgetl.quantization.accuracy_aware as aware

    run, profile = copied_run
    before = published_hashes(run)
    # Rank nodes by local noise only: the per-node logit pass (48 quantizations) is not what is tested here.
    monkeypatch.setattr(aware, "logit_sensitivity", lambda prepared, ranges, settings, local, *rest: local)
    strict = {"min_agreement": 100.0, "min_logit_sqnr_db": 99.0, "max_size_ratio": 0.05, "max_float_nodes": 2}
    path = write_profile(
        tmp_path / "strict.yaml",
        deep_merge(profile, {"optimize": {"int8": {"qat": {"mode": "off"}, "accuracy_aware": strict}}}),
    )
    code, out, err = run_cli(["build", str(path)], capsys)
    assert code == 3, err
    lines = [line for line in err.splitlines() if line.startswith("edgetl: error:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert "price limit" in lines[0] and "best trade-off" in lines[0] and "0.05x the fp32 size" in lines[0]
    assert published_hashes(run) == before, "a refused build leaves the earlier good run as it was"


def test_qat_runs_in_the_optimize_stage_and_says_whether_it_was_used(copied_run, tmp_path: Path) -> None:
    from edgetl.console import Log
    from edgetl.pipeline import build

    run, profile = copied_run
    int8 = {"qat": {"mode": "always", "epochs": 1, "images": 8, "batch_size": 4}, "accuracy_aware": {"enabled": False}}
    path = write_profile(tmp_path / "qat.yaml", deep_merge(profile, {"optimize": {"int8": int8}}))
    build(path, log=Log(quiet=True))
    record = json.loads((run / "optimize/quantization.json").read_text())["qat"]
    assert record["ran"] is True and record["steps"] == 2 and len(record["losses"]) == 1
    assert record["quantized_layers"] > 40  # every conv and the head but the stem
    assert isinstance(record["used"], bool) and "post-training" in record["why"]
    for key in ("ptq_all_int8", "qat_all_int8"):
        assert 0.0 <= record[key]["agreement"] <= 1.0
    assert np.isfinite(record["seconds"])


def test_adaround_runs_only_when_needed_and_says_whether_it_was_used(copied_run, tmp_path: Path) -> None:
    from edgetl.console import Log
    from edgetl.pipeline import build

    run, profile = copied_run
    quantization = run / "optimize/quantization.json"
    lenient = {"adaround": {"mode": "when_needed", "iterations": 20}, "accuracy_aware": {"enabled": False}}
    path = write_profile(tmp_path / "lenient.yaml", deep_merge(profile, {"optimize": {"int8": lenient}}))
    build(path, log=Log(quiet=True))
    assert json.loads(quantization.read_text())["adaround"] is None  # all-int8 met the budget: nothing to fix

    # A budget no all-int8 model meets: AdaRound is tried before anything is kept in float.
    strict = deep_merge(lenient, {"accuracy_aware": {"min_logit_sqnr_db": 99.0}})
    path = write_profile(tmp_path / "strict.yaml", deep_merge(profile, {"optimize": {"int8": strict}}))
    build(path, log=Log(quiet=True))
    record = json.loads(quantization.read_text())["adaround"]
    assert record["mode"] == "when_needed" and record["iterations"] == 20 and record["convs"] > 40
    assert isinstance(record["used"], bool) and "after AdaRound" in record["why"]
    assert record["before"]["within_budget"] is False
    assert all(layer["adaround_mse"] <= layer["nearest_mse"] or not layer["used"] for layer in record["layers"])


def test_agreement_gate_fails_only_when_significantly_below_the_minimum() -> None:
    from edgetl.quantization.accuracy_aware import agreement_upper_bound

    assert agreement_upper_bound(297 / 300, 300) * 100 >= 99.5  # 3 disagreements: noise
    assert agreement_upper_bound(295 / 300, 300) * 100 < 99.5  # 5: a real loss
    assert agreement_upper_bound(1.0, 300) == pytest.approx(1.0) and agreement_upper_bound(0.5, 0) == 1.0
    # More images, tighter bound: 1 % disagreement is significant on 3000 images.
    assert agreement_upper_bound(0.99, 3000) * 100 < 99.5
