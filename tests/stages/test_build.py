"""End-to-end build on a tiny generated dataset: every stage, the report, the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from edgetl.files import sha256_file
from edgetl.layout import METADATA_LABELS, METADATA_PREPROCESSING
from edgetl.preprocessing import read_preprocessing


def test_run_directory_has_every_artefact(built_run) -> None:
    run = built_run.run_dir
    for relative in (
        "manifest.json",
        "report.json",
        "report.md",
        "profile.yaml",
        "labels.txt",
        "preprocessing.json",
        "models/model.pt",
        "models/model_fp32.onnx",
        "models/model_int8.onnx",
        "data/split.json",
        "data/check.json",
        "training/history.json",
        "training/history.csv",
        "export/parity.json",
        "optimize/quantization.json",
        "benchmark/results.json",
    ):
        assert (run / relative).is_file(), relative
    assert (run / "labels.txt").read_text().split() == ["blues", "reds"]


def test_manifest_hashes_every_published_file(built_run) -> None:
    manifest = json.loads((built_run.run_dir / "manifest.json").read_text())
    assert manifest["schema"] == "edgetl.manifest/1"
    assert manifest["deployed_artifact"] == "onnx_int8"
    assert set(manifest["stages"]) == {"data", "finetune", "export", "optimize", "convert", "benchmark", "package"}
    assert manifest["packages"]["torch"] != "not installed"
    assert manifest["profile"]["resolved"]["name"] == "tiny"
    for relative, entry in manifest["files"].items():
        assert sha256_file(built_run.run_dir / relative) == entry["sha256"], relative


def test_report_compares_every_artefact_with_the_baseline(built_run) -> None:
    report = json.loads((built_run.run_dir / "report.json").read_text())
    assert report["schema"] == "edgetl.report/2"
    assert report["baseline"] == "torch_fp32" and report["deployed_artifact"] == "onnx_int8"
    assert list(report["artifacts"]) == ["torch_fp32", "onnx_fp32", "onnx_int8"]
    assert report["eval"]["images"] == 10
    for name, entry in report["artifacts"].items():
        latency = entry["latency_ms"]
        assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"], name
        assert latency["count"] == 4 and latency["batch"] == 1
        assert entry["throughput"]["batch"] == 4 and entry["throughput"]["images_per_second"] > 0
        assert entry["correct"] == round(entry["accuracy"] * entry["total"])
        assert entry["speedup_vs"][name] == pytest.approx(1.0)
    base = report["artifacts"]["torch_fp32"]
    assert base["agreement"] == 1.0 and base["accuracy_delta_points"] == 0.0
    assert report["artifacts"]["onnx_fp32"]["agreement"] == 1.0, "fp32 ONNX must predict exactly like PyTorch"
    int8 = report["artifacts"]["onnx_int8"]
    assert int8["size_ratio_vs"]["onnx_fp32"] < 0.3
    assert report["passed"] is True and report["budgets"] == []
    markdown = (built_run.run_dir / "report.md").read_text()
    assert "| onnx_int8 (deployed) |" in markdown and "none estimated" in markdown


def test_report_has_statistics_per_class_and_measured_performance(built_run) -> None:
    run = built_run.run_dir
    report = json.loads((run / "report.json").read_text())
    int8 = report["artifacts"]["onnx_int8"]
    statistics = int8["statistics"]
    assert statistics["accuracy"]["low"] <= int8["accuracy"] <= statistics["accuracy"]["high"]
    labels = report["eval"]["labels"]
    base_right = [p == y for p, y in zip(report["artifacts"]["torch_fp32"]["predictions"], labels, strict=True)]
    int8_right = [p == y for p, y in zip(int8["predictions"], labels, strict=True)]
    assert statistics["mcnemar"]["discordant"] == sum(a != b for a, b in zip(base_right, int8_right, strict=True))
    assert 0.0 <= statistics["mcnemar"]["p_value"] <= 1.0
    assert set(int8["per_class"]) == {"blues", "reds"}
    assert sum(map(sum, int8["confusion_matrix"])) == 10
    assert len(int8["latency_ms"]["samples"]) == 4
    assert [item["batch"] for item in int8["batch_sweep"]] == [1, 4]
    assert int8["execution"]["providers"] == ["CPUExecutionProvider"] and int8["execution"]["threads"] == 1
    # MACs counted on the shipped file (peak memory and utilization: the intel-cpu build's test).
    for name in ("torch_fp32", "onnx_fp32", "onnx_int8"):
        assert 1.0e8 < report["artifacts"][name]["compute"]["macs"] < 1.5e8, name  # Lite0 at 128: ~0.13 GMACs
    for plot in ("report/tradeoff.png", "report/latency.png"):
        assert (run / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (run / "report.md").read_text()
    for section in ("## Is the difference real?", "## Per class", "## Latency, throughput, memory, compute", "## Data"):
        assert section in markdown
    assert "2 classes from" in markdown and "val 10 (folder)" in markdown and "imbalance" in markdown
    assert "](report/tradeoff.png)" in markdown
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 and "<table>" in page
    manifest = json.loads((run / "manifest.json").read_text())
    assert {"report.html", "report/tradeoff.png", "optimize/calibration.json"} <= set(manifest["files"])


def test_fine_tuning_learns_the_generated_classes(built_run) -> None:
    report = json.loads((built_run.run_dir / "report.json").read_text())
    assert report["artifacts"]["torch_fp32"]["accuracy"] >= 0.9
    history = json.loads((built_run.run_dir / "training/history.json").read_text())
    assert 1 <= len(history["history"]) <= 3
    assert history["head_init"]["mode"] == "random"  # 'reds'/'blues' are not ImageNet classes
    assert history["trainable_parameters"] == 1280 * 2 + 2


def test_calibration_never_touches_val(built_run) -> None:
    split = json.loads((built_run.run_dir / "data/split.json").read_text())
    quantization = json.loads((built_run.run_dir / "optimize/quantization.json").read_text())
    val = {rel for rel, _ in split["val"]}
    train = {rel for rel, _ in split["train"]} | {rel for rel, _ in split["holdout"]}
    used = set(quantization["calibration_images"])
    assert len(used) == 8 and used <= train and not used & val
    assert not {rel for rel, _ in split["holdout"]} & {rel for rel, _ in split["train"]}


def test_exported_models_carry_labels_and_preprocessing(built_run) -> None:
    run = built_run.run_dir
    pre = read_preprocessing(run / "preprocessing.json")
    for name in ("model_fp32.onnx", "model_int8.onnx"):
        model = onnx.load(str(run / "models" / name))
        metadata = {p.key: p.value for p in model.metadata_props}
        assert json.loads(metadata[METADATA_LABELS]) == ["blues", "reds"]
        assert json.loads(metadata[METADATA_PREPROCESSING])["mean"] == list(pre.mean)
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    int8_ops = {node.op_type for node in onnx.load(str(run / "models/model_int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= int8_ops
    quantization = json.loads((run / "optimize/quantization.json").read_text())
    assert len(quantization["float_nodes"]) == 1, "the stem conv is kept in float by default"


def test_parity_is_recorded_and_tight(built_run) -> None:
    parity = json.loads((built_run.run_dir / "export/parity.json").read_text())
    assert parity["passed"] and parity["images"] == 4
    assert parity["max_abs_logit_diff"] < 1e-4 and parity["top1_agreement"] == 1.0


def test_outputs_stay_inside_the_run_directory(built_run, tiny_data: Path) -> None:
    data_files = sorted(p.relative_to(tiny_data) for p in tiny_data.rglob("*"))
    assert all(not part.startswith(".") for p in data_files for part in p.parts), "build wrote into the dataset"
