"""A start without writing YAML: a commented profile for a folder of images and a target.

`edgetl init DATA_DIR --target T` writes it next to where you are, ready to edit; `edgetl build --data
DATA_DIR --target T` builds from the same profile without a file (the run directory keeps the profile it
used, as every build does). Every written profile is validated first: what `init` writes, `validate` accepts.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from edgetl.errors import UserInputError
from edgetl.profile import LoadedProfile, loaded_from_text, parse_profile

DEFAULT_TARGET = "x86-cpu"
DEFAULT_BACKBONE = "efficientnet_lite0"


def profile_name(data: Path) -> str:
    """A profile name from the data folder's name (letters, digits, `_.-`; starts with a letter or digit)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", data.resolve().name).strip("-._")
    return (name or "model")[:64]


def starter_profile(data: Path, target: str, backbone: str, name: str, base: Path | None = None) -> str:
    """Commented profile text for `data`; its root is written relative to `base` (the profile's folder) when given."""
    from edgetl.backbones.registry import get_backbone
    from edgetl.targets import get_target

    if not data.is_dir():
        raise UserInputError(f"{data}: not a folder of images (class folders, or train/ and val/)")
    try:
        spec = get_backbone(backbone)
    except UserInputError as error:
        raise UserInputError(f"--backbone {backbone}: {error.message}") from None
    try:
        chosen = get_target(target)
    except UserInputError as error:
        raise UserInputError(f"--target {target}: {error.message}") from None
    root = os.path.relpath(data.resolve(), base.resolve()) if base is not None else str(data.resolve())
    lines = [
        f"# edgetl profile: {spec.name} on {data.resolve().name}, for {chosen.name} ({chosen.description}).",
        "# Written by `edgetl init`; every field below is optional unless marked. Check: edgetl validate THIS_FILE.",
        "# Editor help: `edgetl schema -o profile.schema.json`, then make the first line",
        '# "# yaml-language-server: $schema=profile.schema.json".',
        "version: 1",
        _line(f"name: {name}", "required: the run directory is ./runs/<name> unless output_dir says otherwise"),
        "seed: 0",
        "",
        "data:",
        "  source: folder",
        _line(f"  root: {json.dumps(root)}", "required: class folders, or train/ and val/ (relative to this file)"),
        _line("  holdout_fraction: 0.15", "early stopping watches this share of train; val is only ever evaluated"),
        _line("  # val_fraction: 0.2", "without a val/ folder, this share of each class becomes val (seeded)"),
        "",
        "backbone:",
        _line(f"  name: {spec.name}", f"`edgetl backbones` lists them; input {spec.input_size} px"),
        "",
        "finetune:",
        _line("  strategy: auto", "linear probe vs full fine-tune, decided on the holdout"),
        _line("  # epochs: 20", "default: sized to the number of training images"),
        "",
    ]
    if not chosen.supports_int8:
        lines += ["optimize:", "  int8:", _line("    enabled: false", "this target runs fp16/fp32 only"), ""]
    lines += [
        _line(f"target: {chosen.name}", "`edgetl targets` lists them, with what was verified where"),
        "",
        _line("budgets:", "a missed budget fails the build (exit 3) after the report is written"),
        _line("  max_accuracy_drop: 1.0", "points, the shipped model vs the fp32 baseline"),
        _line("  # min_accuracy: 90.0", "percent on val"),
        "  # max_size_mb: 10.0",
    ]
    text = "\n".join(lines) + "\n"
    parse_profile(text, (base or Path.cwd()) / f"{name}.yaml")  # refuses here what validate would
    return text


def _line(setting: str, comment: str) -> str:
    """A YAML line with its comment in a column of its own."""
    return f"{setting:<32}  # {comment}"


def write_starter_profile(data: Path, output: Path, target: str, backbone: str, name: str | None) -> Path:
    """`edgetl init`: the profile at `output`, never over an existing file."""
    if output.exists() or output.is_symlink():
        raise UserInputError(f"{output}: already exists; edgetl init never overwrites (choose another --output)")
    if not output.parent.is_dir():
        raise UserInputError(f"{output.parent}: no such folder for --output")
    text = starter_profile(data, target, backbone, name or profile_name(data), base=output.parent)
    with output.open("x", encoding="utf-8") as handle:  # "x": a file that appeared meanwhile is not replaced
        handle.write(text)
    return output


def starter_loaded(data: Path, target: str, backbone: str) -> LoadedProfile:
    """`edgetl build --data`: the starter profile, validated as if it were `./<name>.yaml` (no file is written)."""
    name = profile_name(data)
    return loaded_from_text(starter_profile(data, target, backbone, name), Path.cwd() / f"{name}.yaml")
