from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgetl.errors import ProfileError
from edgetl.plan import build_plan
from edgetl.profile import load_profile, parse_profile

REPO = Path(__file__).resolve().parents[1]
MINIMAL = "version: 1\nname: demo\ndata:\n  root: images\n"


def _errors(text: str, tmp_path: Path) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    return str(caught.value)


def test_every_shipped_profile_validates() -> None:
    profiles = sorted((REPO / "profiles").glob("*.yaml"))
    assert profiles, "no profiles shipped"
    for path in profiles:
        assert load_profile(path).profile.name


def test_defaults_and_relative_paths_resolve_against_the_profile(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "p.yaml"
    path.write_text(MINIMAL + "output_dir: ../out\n")
    loaded = load_profile(path)
    assert loaded.profile.data.root == (tmp_path / "sub" / "images").resolve()
    assert loaded.output_dir == (tmp_path / "out").resolve()
    assert build_plan(loaded.profile).deployed_artifact == "onnx_int8"
    assert loaded.profile.optimize.int8.activation_type == "uint8"


def test_unknown_key_names_file_line_and_suggestion(tmp_path: Path) -> None:
    message = _errors(MINIMAL + "finetune:\n  epoch: 3\n", tmp_path)
    assert "p.yaml:6: finetune.epoch: unknown key; did you mean 'epochs'?" in message
    assert "allowed keys:" in message and "batch_size" in message


def test_wrong_literal_lists_allowed_values(tmp_path: Path) -> None:
    message = _errors(MINIMAL + "optimize:\n  int8:\n    activation_type: int4\n", tmp_path)
    assert "optimize.int8.activation_type" in message
    assert "'uint8' or 'int8'" in message and "int4" in message


def test_a_target_whose_runtime_is_not_converted_says_how_to_ship_another(tmp_path: Path) -> None:
    message = _errors(MINIMAL + "target: android-arm64\nconvert:\n  runtimes: [executorch]\n", tmp_path)
    assert "target android-arm64 ships litert_int8, which this profile does not produce" in message, message
    assert "add litert to convert.runtimes, or name the artefact to ship in budgets.artifact" in message
    assert "executorch_int8" in message
    executorch_only = "target: android-arm64\nconvert:\n  runtimes: [executorch]\n"
    (tmp_path / "ok.yaml").write_text(MINIMAL + executorch_only + "budgets:\n  artifact: executorch_int8\n")
    assert build_plan(load_profile(tmp_path / "ok.yaml").profile).deployed_artifact == "executorch_int8"


def test_every_problem_is_reported_on_its_own_line(tmp_path: Path) -> None:
    message = _errors(MINIMAL + "seed: abc\nbenchmark:\n  threads: 0\n", tmp_path)
    lines = message.splitlines()
    assert len(lines) == 2
    assert any(line.startswith(f"{tmp_path / 'p.yaml'}:5: seed:") for line in lines)
    assert any("benchmark.threads" in line and "greater than 0" in line for line in lines)


def test_unknown_backbone_and_target_suggest_close_names(tmp_path: Path) -> None:
    message = _errors(MINIMAL + "backbone:\n  name: mobilenetv2\ntarget: x86cpu\n", tmp_path)
    assert "did you mean 'mobilenet_v2'?" in message
    assert "did you mean 'x86-cpu'?" in message


def test_missing_data_section_and_root(tmp_path: Path) -> None:
    assert "data: required field is missing" in _errors("version: 1\nname: demo\n", tmp_path)
    assert "root is required" in _errors("version: 1\nname: demo\ndata:\n  source: folder\n", tmp_path)


def test_inconsistent_sections_are_refused(tmp_path: Path) -> None:
    message = _errors(
        MINIMAL + "optimize:\n  int8:\n    enabled: false\nbenchmark:\n  artifacts: [torch_fp32, onnx_int8]\n", tmp_path
    )
    assert "onnx_int8 but optimize.int8.enabled is false" in message
    message = _errors(MINIMAL + "benchmark:\n  artifacts: [torch_fp32, onnx_fp16, onnx_int8]\n", tmp_path)
    assert "onnx_fp16 but optimize.fp16.enabled is false" in message
    message = _errors(MINIMAL + "benchmark:\n  baseline: onnx_fp32\n  artifacts: [torch_fp32, onnx_int8]\n", tmp_path)
    assert "baseline 'onnx_fp32' must be one of the benchmarked artifacts" in message


def test_benchmarked_artifacts_default_to_what_the_profile_produces(tmp_path: Path) -> None:
    from edgetl.profile import load_profile

    (tmp_path / "images").mkdir(exist_ok=True)
    cases = {
        "": ["torch_fp32", "onnx_fp32", "onnx_int8"],
        "optimize:\n  int8:\n    enabled: false\n": ["torch_fp32", "onnx_fp32"],
        "optimize:\n  fp16:\n    enabled: true\n": ["torch_fp32", "onnx_fp32", "onnx_fp16", "onnx_int8"],
    }
    for extra, expected in cases.items():
        path = tmp_path / "p.yaml"
        path.write_text(MINIMAL + extra)
        assert build_plan(load_profile(path).profile).benchmarked_artifacts == expected, extra


def test_impossible_budgets_are_refused(tmp_path: Path) -> None:
    message = _errors(MINIMAL + "budgets:\n  min_accuracy: 120\n  max_latency_ms: -1\n", tmp_path)
    assert "budgets.min_accuracy" in message and "budgets.max_latency_ms" in message


def test_duplicate_keys_and_bad_yaml_point_at_the_line(tmp_path: Path) -> None:
    assert "duplicate key 'name'" in _errors(MINIMAL + "name: again\n", tmp_path)
    message = _errors("version: 1\nname: [unclosed\n", tmp_path)
    assert "invalid YAML" in message and "p.yaml:" in message


def test_not_a_mapping_missing_file_and_directory(tmp_path: Path) -> None:
    assert "must be a YAML mapping" in _errors("- a\n- b\n", tmp_path)
    with pytest.raises(ProfileError, match="profile not found"):
        load_profile(tmp_path / "nope.yaml")
    with pytest.raises(ProfileError, match="is a directory"):
        load_profile(tmp_path)


def test_yaml_tags_cannot_execute_code(tmp_path: Path) -> None:
    message = _errors("!!python/object/apply:os.system ['echo pwned']\n", tmp_path)
    assert "invalid YAML" in message


def test_parse_profile_is_usable_without_a_file(tmp_path: Path) -> None:
    profile = parse_profile(MINIMAL, tmp_path / "virtual.yaml")
    assert profile.data.root == (tmp_path / "images").resolve()


def test_validation_does_not_import_torch() -> None:
    code = (
        "import sys; from edgetl.cli import main\n"
        "try:\n    main(['validate', 'profiles/quickstart.yaml'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\nprint('clean')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert "clean" in result.stdout, result.stderr


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("target: jetson-nano\n", "target jetson-nano supports fp32, fp16 only; set optimize.int8.enabled: false"),
        ("target: nvidia-gpu\n", "TensorRT runs symmetric signed int8 only"),
        ("tensorrt:\n  max_batch: 4\n", "the tensorrt section applies to TensorRT targets; target x86-cpu"),
        (
            "target: jetson-orin-nano\noptimize:\n  int8:\n    activation_type: int8\ntensorrt:\n  dla_core: 0\n",
            "target jetson-orin-nano has 0 DLA core(s)",
        ),
        (
            "target: nvidia-gpu\noptimize:\n  int8:\n    enabled: false\ntensorrt:\n  opt_batch: 8\n  max_batch: 4\n",
            "need min_batch <= opt_batch <= max_batch",
        ),
    ],
)
def test_target_constraints_are_checked_when_the_profile_loads(tmp_path: Path, extra: str, expected: str) -> None:
    assert expected in _errors(MINIMAL + extra, tmp_path)


def test_targets_state_precisions_memory_and_device_steps() -> None:
    from edgetl.targets import get_target, target_names

    assert {"x86-cpu", "nvidia-gpu", "jetson-orin-nano", "jetson-nano", "raspberry-pi-5"} <= set(target_names())
    nano = get_target("jetson-nano")
    assert not nano.supports_int8 and nano.engine is not None and nano.engine.tensorrt == "8.2"
    assert nano.build_on_device and nano.engine.workspace_mb <= 512
    orin = get_target("jetson-orin-nano")
    assert orin.engine_precision(True) == "int8" and orin.engine_precision(False) == "fp16"
    assert any("edgetl engine build" in step for step in orin.on_device)
    assert get_target("raspberry-pi-5").runtime == "onnxruntime" and get_target("nvidia-gpu").uses_tensorrt


def test_a_data_only_profile_gets_the_measured_defaults(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(MINIMAL)
    profile = load_profile(path).profile
    finetune = profile.finetune
    assert finetune.strategy == "auto" and finetune.epochs is None and finetune.train_resolution is None
    assert finetune.early_stopping.patience is None and finetune.label_smoothing == 0.1
    aware = profile.optimize.int8.accuracy_aware
    assert (aware.keep_speedup, aware.max_size_ratio) == (0.8, 0.35)
    assert profile.optimize.int8.qat.mode == "off" and profile.optimize.int8.bias_correction == "auto"


def test_relative_budgets_need_the_fp32_onnx_model_measured(tmp_path: Path) -> None:
    text = MINIMAL + "benchmark:\n  artifacts: [torch_fp32, onnx_int8]\nbudgets:\n  min_speedup: 1.8\n"
    assert "budgets.min_speedup is relative to onnx_fp32" in _errors(text, tmp_path)


def test_relative_budgets_compare_with_the_fp32_onnx_model() -> None:
    from edgetl.profile import BudgetsConfig
    from edgetl.report.budgets import evaluate_budgets

    measured = {"onnx_int8": {"speedup_vs": {"onnx_fp32": 1.5}, "size_ratio_vs": {"onnx_fp32": 0.28}}}
    results = evaluate_budgets(BudgetsConfig(min_speedup=1.8, max_size_ratio=0.3), measured, "onnx_int8")
    speed, size = results
    assert not speed.passed and "1.50 x is below 1.8 x" in speed.message and size.passed


# -- bounded reads: nothing in a profile can make loading it hang or eat memory --------------------

ALIAS_BOMB = "\n".join(
    ["name: x", "output_dir: runs/x", "data: {root: d}", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    + ["finetune: {epochs: *a11}"]
)


def test_an_alias_bomb_is_refused_in_one_line_without_expanding(tmp_path: Path) -> None:
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    started = time.perf_counter()
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert time.perf_counter() - started < 5
    assert "aliases" in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
    # Under the alias limit (9 levels, 10^9 leaves if expanded): the error path maps lines without expanding.
    path.write_text("\n".join(ALIAS_BOMB.splitlines()[:12]) + "\nfinetune: {epochs: *a8}\n")
    started = time.perf_counter()
    with pytest.raises(ProfileError, match="finetune.epochs"):
        load_profile(path)
    assert time.perf_counter() - started < 5


def test_a_few_aliases_still_work_and_errors_still_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: x\noutput_dir: runs/x\ndata: &d {root: d}\nfinetune: {epochs: -1}\n")
    with pytest.raises(ProfileError, match=r"p.yaml:4: finetune.epochs"):
        load_profile(path)


def test_deep_nesting_huge_files_and_fifos_are_refused(tmp_path: Path) -> None:
    import os

    deep = tmp_path / "deep.yaml"
    deep.write_text("name: x\nx: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ProfileError, match="nested too deeply|invalid YAML"):
        load_profile(deep)
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: x\n" + "# padding\n" * 200_000)
    with pytest.raises(ProfileError, match="larger than 1024 KiB"):
        load_profile(huge)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ProfileError, match="not a regular file"):
        load_profile(fifo)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("finetune: {epochs: 1e32}", "finetune.epochs"),
        ("optimize: {int8: {adaround: {iterations: 1000000000000}}}", "optimize.int8.adaround.iterations"),
        ("export: {parity_tolerance: .inf}", "export.parity_tolerance"),
        ("export: {parity_tolerance: .nan}", "export.parity_tolerance"),
        ("seed: 340282366920938463463374607431768211456", "seed"),
    ],
)
def test_absurd_numbers_are_refused_at_validation(tmp_path: Path, section: str, expected: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"name: x\noutput_dir: runs/x\ndata: {{root: d}}\n{section}\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert f"p.yaml:4: {expected}" in str(info.value), str(info.value)
