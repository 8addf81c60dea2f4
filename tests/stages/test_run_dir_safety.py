"""edgetl deletes or overwrites only what it wrote, inside its output folder, after resolving symlinks.

A hostile or damaged run directory (manifest names that leave it, symlinked folders, a foreign
manifest.json) and output folders that are not edgetl's (inside the dataset, a folder of user
files given to `edgetl tune`) are refused or ignored; a tree of sentinel files around them is
checksummed before and after each case and must not change.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from edgetl.files import owned_path, sha256_file
from tests.helpers import deep_merge, run_cli, tiny_profile, write_profile


def _tree(root: Path) -> dict[str, str]:
    """Checksums of every file under `root`, links not followed (a link is recorded as its target)."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[key] = f"-> {path.readlink()}"
        elif path.is_file():
            out[key] = sha256_file(path)
    return out


@pytest.fixture()
def sentinels(tmp_path: Path) -> Path:
    """Files and folders a hostile run directory points at."""
    root = tmp_path / "sentinels"
    (root / "victim").mkdir(parents=True)
    (root / "victim" / "precious.txt").write_text("do not delete")
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "keep.txt").write_text("keep")
    (root / "absolute.txt").write_text("absolute")
    return root


def _copy_run(built_run, tmp_path: Path) -> tuple[Path, Path]:
    run = tmp_path / "run"
    shutil.copytree(built_run.run_dir, run)
    profile = yaml.safe_load((built_run.run_dir / "profile.yaml").read_text())
    path = write_profile(tmp_path / "p.yaml", deep_merge(profile, {"output_dir": str(run)}))
    return run, path


def test_manifest_names_outside_the_run_directory_are_never_deleted(
    built_run, tmp_path: Path, sentinels: Path, capsys
) -> None:
    run, profile = _copy_run(built_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    hostile = ["../sentinels/victim", str(sentinels / "absolute.txt"), "models/../../sentinels/victim", "./x", ""]
    for name in hostile:
        manifest["files"][name] = {"sha256": "0" * 64, "bytes": 1}
    (run / "manifest.json").write_text(json.dumps(manifest))
    before = _tree(sentinels)
    code, _, err = run_cli(["build", str(profile), "--quiet"], capsys)
    assert code == 0, err
    assert _tree(sentinels) == before
    assert not set(hostile) & set(json.loads((run / "manifest.json").read_text())["files"])


@pytest.mark.parametrize("where", ["report", ".edgetl/cache/export"])
def test_a_symlinked_folder_in_the_run_directory_is_refused(
    built_run, tmp_path: Path, sentinels: Path, capsys, where: str
) -> None:
    run, profile = _copy_run(built_run, tmp_path)
    remove = run / where
    shutil.rmtree(remove)
    remove.symlink_to(sentinels / "elsewhere", target_is_directory=True)
    before, published = _tree(sentinels), _tree(run)
    code, _, err = run_cli(["build", str(profile), "--quiet"], capsys)
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert f"{where} is a symbolic link to {sentinels / 'elsewhere'}" in line and str(profile) in line
    assert _tree(sentinels) == before and _tree(run) == published


def test_prune_cache_does_not_follow_a_symlinked_stage_folder(tmp_path: Path, sentinels: Path) -> None:
    from types import SimpleNamespace

    from edgetl.stages.cache import prune_cache

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "export").symlink_to(sentinels / "victim", target_is_directory=True)
    before = _tree(sentinels)
    prune_cache(SimpleNamespace(shared_cache=None, cache_root=cache, results={}, work_root=tmp_path / "work"))
    assert _tree(sentinels) == before


def test_a_foreign_manifest_does_not_make_a_run_directory(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "someone-elses"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"files": {"../x": {}}}))
    (folder / "notes.txt").write_text("mine")
    profile = write_profile(tmp_path / "p.yaml", tiny_profile(tmp_path / "data", folder))
    before = _tree(tmp_path)
    code, _, err = run_cli(["build", str(profile), "--quiet"], capsys)
    assert code == 2 and "is a non-empty folder that is not an edgetl run directory" in err, err
    assert _tree(tmp_path) == before


def test_tune_refuses_a_folder_of_user_files(tiny_data: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    profile = write_profile(tmp_path / "t.yaml", tiny_profile(tiny_data, folder, tune={"trials": 1}))
    before = _tree(tmp_path)
    code, _, err = run_cli(["tune", str(profile), "--quiet"], capsys)
    assert code == 2 and "is a non-empty folder that is not an edgetl run directory" in err, err
    assert _tree(tmp_path) == before, "nothing written: no tune/, no .edgetl/"


def test_an_output_folder_inside_the_dataset_is_refused(tiny_data: Path, tmp_path: Path, capsys) -> None:
    inside = tiny_data / "val" / sorted(p.name for p in (tiny_data / "val").iterdir())[0] / "run"
    profile = write_profile(tmp_path / "p.yaml", tiny_profile(tiny_data, inside))
    before = _tree(tiny_data)
    code, _, err = run_cli(["build", str(profile), "--quiet"], capsys)
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert "is inside data.root" in line and "would be scanned as training or val images" in line
    assert _tree(tiny_data) == before


def test_owned_path_accepts_only_names_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path.parent, target_is_directory=True)
    assert owned_path(tmp_path, "models/model.pt") == tmp_path / "models/model.pt"
    assert owned_path(tmp_path, "linked") == tmp_path / "linked"  # the link itself may be removed
    for name in ["../x", "/etc/passwd", "models/../../x", "a//b", "./a", "", "linked/x", "a\\..\\b", "a\0b"]:
        assert owned_path(tmp_path, name) is None, name
