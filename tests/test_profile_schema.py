"""The profile's JSON Schema (for editors) is current, named by every shipped profile, and agrees with edgetl.

The checks against the schema need `jsonschema` (`.ci/run` installs it; `pip install jsonschema` here).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edgetl.profile import PROFILE_SCHEMA_FILE, profile_json_schema
from tests.helpers import run_cli

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
MODELINE = f"# yaml-language-server: $schema={PROFILE_SCHEMA_FILE}"


def test_the_committed_schema_is_what_edgetl_schema_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["schema", "-o", str(tmp_path / "schema.json")], capsys)
    assert code == 0, err
    written = json.loads((tmp_path / "schema.json").read_text())
    assert written == profile_json_schema()
    assert json.loads((PROFILES / PROFILE_SCHEMA_FILE).read_text()) == written, (
        "profiles/profile.schema.json is stale: edgetl schema -o profiles/profile.schema.json"
    )


def test_every_shipped_profile_names_the_schema_and_passes_it() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(profile_json_schema())
    profiles = sorted(PROFILES.glob("*.yaml"))
    assert profiles
    for path in profiles:
        text = path.read_text()
        assert text.splitlines()[0] == MODELINE, f"{path.name}: first line should be {MODELINE!r}"
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(yaml.safe_load(text))]
        assert not errors, f"{path.name}: {errors}"


def test_the_schema_catches_what_an_editor_should_flag() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(profile_json_schema())
    base = yaml.safe_load((PROFILES / "quickstart.yaml").read_text())
    wrong = [
        {**base, "finetune": {**base["finetune"], "epcohs": 3}},  # a typo in a key
        {**base, "target": "raspberry-pi-4"},  # an unknown target
        {**base, "backbone": {"name": "resnet50"}},  # an unknown backbone
        {**base, "optimize": {"int8": {"calibration_method": "kl"}}},  # a value outside the choices
    ]
    for profile in wrong:
        assert list(validator.iter_errors(profile)), profile
