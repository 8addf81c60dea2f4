"""The Python API: `import edgetl` stays torch-free, profiles from paths, mappings and Profiles, typed results.

The real builds through the API run in tests/test_examples.py (the Python example and the getting-started
page) and tests/test_quickstart.py (the quickstart profile on hymenoptera).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import edgetl
from edgetl import api
from edgetl.errors import BudgetExceeded, ProfileError, UserInputError
from tests.helpers import tiny_profile, write_profile


def test_import_edgetl_imports_no_torch_until_a_build_starts() -> None:
    code = (
        "import sys, edgetl\n"
        "names = [getattr(edgetl, name) for name in edgetl.__all__]\n"
        "edgetl.api.resolve_profile\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'timm', 'onnx', 'matplotlib') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_every_public_name_is_listed_typed_and_documented() -> None:
    assert edgetl.__all__ == sorted(edgetl.__all__)
    for name in edgetl.__all__:
        value = getattr(edgetl, name)
        if callable(value) and name != "ProfileSource":
            assert (value.__doc__ or "").strip(), f"edgetl.{name} has no docstring"
    assert set(edgetl.__all__) <= set(dir(edgetl))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        edgetl.nope  # noqa: B018 - the lookup is what is tested
    assert edgetl.build is api.build and edgetl.Profile is edgetl.profile.Profile
    importlib.import_module("edgetl.tuning.results")  # importing a subpackage must not shadow a public function
    assert edgetl.tune is api.tune and edgetl.load is edgetl.runtime.load


def test_a_profile_comes_from_a_path_a_mapping_or_a_profile_object(tmp_path: Path, tiny_data: Path) -> None:
    data = tiny_profile(tiny_data, tmp_path / "run")
    path = write_profile(tmp_path / "p" / "tiny.yaml", data)
    from_path = api.resolve_profile(path)
    assert from_path.path == path.resolve() and from_path.text == path.read_text()

    from_mapping = api.resolve_profile(data)
    profile_object = edgetl.Profile.model_validate(data)
    from_object = api.resolve_profile(profile_object)
    for loaded in (from_mapping, from_object):
        assert loaded.profile == from_path.profile
        assert yaml.safe_load(loaded.text)["name"] == "tiny"  # the run directory keeps a profile that rebuilds

    # Overrides replace one field of a section and keep the others; the file on disk is untouched.
    overridden = api.resolve_profile(path, finetune={"epochs": 1}, target="raspberry-pi-5")
    assert overridden.profile.finetune.epochs == 1 and overridden.profile.target == "raspberry-pi-5"
    assert overridden.profile.finetune.lr == from_path.profile.finetune.lr
    assert overridden.path.parent == path.resolve().parent  # relative paths resolve where the file is
    assert path.read_text() == from_path.text


def test_relative_paths_in_a_mapping_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = api.resolve_profile(edgetl.Profile(name="rel", data={"root": Path("images")}))
    assert loaded.profile.data.root == (tmp_path / "images").resolve()
    assert loaded.output_dir == tmp_path / "runs" / "rel"
    # The run directory's copy rebuilds the same thing from anywhere: its paths are written resolved.
    assert yaml.safe_load(loaded.text)["data"]["root"] == str((tmp_path / "images").resolve())


def test_bad_profile_input_is_one_error_naming_the_field(tmp_path: Path, tiny_data: Path) -> None:
    path = write_profile(tmp_path / "tiny.yaml", tiny_profile(tiny_data, tmp_path / "run"))
    with pytest.raises(ProfileError, match=r"tiny.yaml \(with overrides\): finetune.epochs"):  # no line: generated
        api.resolve_profile(path, finetune={"epochs": 0})
    import numpy as np

    from edgetl.profile import FinetuneConfig

    typed = api.resolve_profile(path, finetune=FinetuneConfig(epochs=2), seed=np.int64(7))
    assert typed.profile.finetune.epochs == 2 and typed.profile.seed == 7
    assert typed.profile.finetune.lr == 0.01  # a config object overrides its set fields only, like a mapping
    with pytest.raises(ProfileError, match="unknown key; did you mean 'finetune'"):
        api.resolve_profile(path, fine_tune={"epochs": 2})
    with pytest.raises(ProfileError, match="profile mapping.*name: required field is missing"):
        api.resolve_profile({"data": {"root": str(tiny_data)}})
    with pytest.raises(UserInputError, match="expected a path, a mapping or an edgetl.Profile, got int"):
        api.resolve_profile(3)  # type: ignore[arg-type]
    with pytest.raises(ProfileError, match="profile not found"):
        edgetl.build(tmp_path / "absent.yaml")


def test_a_run_reads_back_as_typed_results(built_run) -> None:
    run = edgetl.load_run(built_run.run_dir)
    report = json.loads((built_run.run_dir / "report.json").read_text())
    assert run.deployed.name == report["deployed_artifact"] and run.baseline.name == report["baseline"]
    assert set(run.artifacts) == set(report["artifacts"])
    for name, artifact in run.artifacts.items():
        record = report["artifacts"][name]
        assert artifact.accuracy == record["accuracy"] and artifact.correct == record["correct"]
        assert artifact.file == built_run.run_dir / record["file"] and artifact.file.is_file()
        assert artifact.latency_ms == record["latency_ms"]["p50"] and artifact.size_mb == record["size_bytes"] / 1e6
    assert run.baseline.speedup == 1.0
    assert [b.message for b in run.budgets] == [b["message"] for b in report["budgets"]]
    assert run.passed is report["passed"] and run.bundle == built_run.run_dir / "bundle"
    assert run.report_md.is_file() and run.profile_path.is_file()
    assert edgetl.load(run).labels == run.load().labels == report["eval"]["classes"]  # a Run is its run directory
    labels = {p.label for p in run.load().predict(sorted((built_run.run_dir / "bundle").rglob("*.jpg"))[:2])[0]}
    assert labels <= set(report["eval"]["classes"])


def test_failed_budgets_are_in_the_run_and_raise_on_request(built_run, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(built_run.run_dir, copy, symlinks=True)
    report = json.loads((copy / "report.json").read_text())
    report["budgets"].append(
        {
            "name": "max_size_mb",
            "artifact": report["deployed_artifact"],
            "limit": 0.001,
            "measured": 3.9,
            "unit": "MB",
            "passed": False,
            "message": "max_size_mb: 3.90 MB (<= 0.001 MB)",
        }
    )
    report["passed"] = False
    (copy / "report.json").write_text(json.dumps(report))
    run = edgetl.load_run(copy)
    assert not run.passed and [b.name for b in run.failed_budgets] == ["max_size_mb"]
    with pytest.raises(BudgetExceeded, match=r"budget violated: max_size_mb: 3.90 MB") as raised:
        run.raise_for_budgets()
    assert raised.value.exit_code == 3


def test_load_run_refuses_what_is_not_a_finished_build(tmp_path: Path) -> None:
    with pytest.raises(edgetl.ModelFileError, match="no report.json; not a finished edgetl build"):
        edgetl.load_run(tmp_path)
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(edgetl.ModelFileError, match="not an edgetl report"):
        edgetl.load_run(tmp_path)


def test_build_passes_progress_to_the_callback_and_checks_budgets_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built_run, caplog: pytest.LogCaptureFixture
) -> None:
    """The API's wiring around the pipeline (the pipeline itself is what every build test runs)."""
    import edgetl.pipeline

    seen: dict[str, object] = {}

    def fake_pipeline(loaded, **kwargs):  # noqa: ANN001, ANN003, ANN202 - stands in for pipeline.build
        seen["loaded"], seen["kwargs"] = loaded, kwargs
        kwargs["log"].stage("finetune", "epoch 1/1")
        kwargs["log"].warn("careful")
        report = json.loads((built_run.run_dir / "report.json").read_text())
        report["budgets"] = [
            {
                "name": "min_accuracy",
                "artifact": report["deployed_artifact"],
                "limit": 101.0,
                "measured": 90.0,
                "unit": "%",
                "passed": False,
                "message": "min_accuracy: 90.00 % (>= 101 %)",
            }
        ]
        report["passed"] = False
        return edgetl.pipeline.BuildOutcome(built_run.run_dir, report, built_run.results, 1.5)

    monkeypatch.setattr(edgetl.pipeline, "build", fake_pipeline)
    events: list[api.Progress] = []
    profile = {"name": "cb", "data": {"root": str(tmp_path)}}
    caplog.set_level("INFO", logger="edgetl")
    run = edgetl.build(profile, output_dir=tmp_path / "out", quiet=True, on_progress=events.append)
    assert [(e.kind, e.stage, e.message) for e in events] == [
        ("stage", "finetune", "epoch 1/1"),
        ("warning", None, "careful"),
    ]
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "edgetl"] == [
        ("INFO", "finetune: epoch 1/1"),
        ("WARNING", "careful"),
    ]
    assert seen["kwargs"]["output_dir"] == tmp_path / "out"  # type: ignore[index]
    assert seen["loaded"].profile.name == "cb"  # type: ignore[attr-defined]
    assert run.passed is False and run.failed_budgets and run.seconds == 1.5
    with pytest.raises(BudgetExceeded):
        edgetl.build(profile, quiet=True, check_budgets=True)
