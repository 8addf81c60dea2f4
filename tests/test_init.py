"""A start without YAML: `edgetl init` writes a profile `validate` accepts; `edgetl build --data` builds from one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgetl.profile import LoadedProfile, load_profile
from tests.helpers import make_dataset, run_cli


@pytest.mark.parametrize("target", ["x86-cpu", "raspberry-pi-5", "web", "jetson-nano", "android-arm64"])
def test_init_writes_a_profile_validate_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    data = make_dataset(tmp_path / "my photos", train=2, val=1)
    out = tmp_path / "profiles" / "mine.yaml"
    out.parent.mkdir()
    code, stdout, err = run_cli(["init", str(data), "--target", target, "-o", str(out)], capsys)
    assert code == 0, err
    assert f"edgetl build {out}" in stdout
    text = out.read_text()
    assert yaml.safe_load(text)["data"]["root"] == "../my photos"  # relative to the profile, spaces kept
    code, stdout, err = run_cli(["validate", str(out)], capsys)
    assert code == 0, err
    loaded = load_profile(out).profile
    assert loaded.name == "my-photos" and loaded.target == target and loaded.data.root == data.resolve()


def test_init_refuses_bad_input_in_one_line_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_dataset(tmp_path / "data", train=2, val=1)
    existing = tmp_path / "data.yaml"
    existing.write_text("mine\n")
    cases = [
        (["init", str(data), "-o", str(existing)], "already exists; edgetl init never overwrites"),
        (["init", str(tmp_path / "absent"), "-o", str(tmp_path / "a.yaml")], "not a folder of images"),
        (["init", str(data), "--target", "pi4", "-o", str(tmp_path / "b.yaml")], "--target pi4: unknown target"),
        (["init", str(data), "--backbone", "resnet", "-o", str(tmp_path / "c.yaml")], "did you mean 'resnet18'"),
        (["build", "--data", str(data), str(existing)], "give a profile file or --data DIR, not both"),
    ]
    for args, message in cases:
        code, _, err = run_cli(args, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert existing.read_text() == "mine\n"
    assert not (tmp_path / "a.yaml").exists() and not (tmp_path / "b.yaml").exists()


def test_build_with_data_builds_from_the_starter_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI hands the pipeline the starter profile (the build itself is the pipeline's, tested elsewhere)."""
    import edgetl.pipeline

    data = make_dataset(tmp_path / "flowers", train=2, val=1)
    seen: dict[str, object] = {}

    def fake_build(loaded: LoadedProfile, **kwargs: object) -> object:
        seen["profile"] = loaded.profile
        seen["text"] = loaded.text
        seen["output_dir"] = kwargs["output_dir"]
        raise SystemExit(0)

    monkeypatch.setattr(edgetl.pipeline, "build", fake_build)
    code, _, err = run_cli(["build", "--data", str(data), "--target", "web", "-o", str(tmp_path / "run")], capsys)
    assert code == 0, err
    profile = seen["profile"]
    assert profile.name == "flowers" and profile.target == "web" and profile.data.root == data.resolve()  # type: ignore[attr-defined]
    assert seen["output_dir"] == tmp_path / "run"
    assert "# Written by `edgetl init`" in str(seen["text"])  # the run directory keeps the commented profile
