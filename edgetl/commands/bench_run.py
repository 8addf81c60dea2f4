"""`edgetl bench`: re-measure a finished run and gate it against a stored report, for CI.

The run directory holds everything needed: the artefacts, the split (val images and labels), the
preprocessing and the resolved profile in the manifest. The new measurements are written next to
the build's own report (`bench/`), never over it. With a baseline report, every artefact's
accuracy, latency, size and throughput are compared with tolerances (see `edgetl.regression`),
and a JUnit XML file can be written for CI systems.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetl import layout
from edgetl.backends import ARTIFACTS
from edgetl.errors import ModelFileError, UserInputError
from edgetl.files import nearest_existing, read_json
from edgetl.plan import build_plan
from edgetl.report.regression import (
    Check,
    Tolerances,
    compare_reports,
    junit_properties,
    load_report,
    passed,
    write_junit,
)


@dataclass
class BenchOutcome:
    report: dict[str, Any]
    report_dir: Path
    checks: list[Check]
    measured: bool

    @property
    def passed(self) -> bool:
        return passed(self.checks)


def _manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / layout.MANIFEST
    if not path.is_file():
        raise ModelFileError(f"{run_dir}: not an edgetl run directory ({layout.MANIFEST} missing)")
    try:
        manifest = read_json(path)
    except (ValueError, RecursionError) as error:
        raise ModelFileError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise ModelFileError(f"{path}: not an edgetl manifest (a JSON {type(manifest).__name__}); rerun edgetl build")
    if not manifest.get("complete"):
        raise ModelFileError(f"{run_dir}: holds a partial build; run edgetl build first")
    profile = manifest.get("profile")
    if not isinstance(profile, dict) or not isinstance(profile.get("resolved"), dict):
        raise ModelFileError(f"{path}: profile.resolved missing or not a mapping; rerun edgetl build")
    for key in ("stages", "files"):
        if not isinstance(manifest.get(key, {}), dict):
            raise ModelFileError(f"{path}: {key} is not a mapping; rerun edgetl build")
    return manifest


def _profile(manifest: dict[str, Any], path: Path) -> Any:
    """The profile the run was built with, as recorded; a damaged record is one line naming the manifest."""
    from pydantic import ValidationError

    from edgetl.profile import Profile

    try:
        return Profile.model_validate(manifest["profile"]["resolved"])
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "profile"
        raise ModelFileError(f"{path}: profile.resolved.{field}: {first['msg']}; rerun edgetl build") from None


def measure_run(run_dir: Path, output: Path, log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Benchmark the artefacts of `run_dir` again on this machine; write and return a new report."""
    from edgetl.backends.tensorrt import engine_artifact, read_sidecar, sidecar_path
    from edgetl.data.split import read_split
    from edgetl.measure.artifacts import measure_models
    from edgetl.preprocessing import read_preprocessing
    from edgetl.report.compose import compose_report, publish_report
    from edgetl.summaries import read_manifest_summaries

    manifest = _manifest(run_dir)
    profile = _profile(manifest, run_dir / layout.MANIFEST)
    models = {name: run_dir / ARTIFACTS[name].file for name in build_plan(profile).benchmarked_artifacts}
    engine = run_dir / layout.ENGINE
    if engine.is_file() and sidecar_path(engine).is_file():
        # An engine built into the run's bundle (during the build, or later with edgetl engine build).
        models[engine_artifact(read_sidecar(engine).engine_options.precision)] = engine
    missing = [str(path) for path in models.values() if not path.is_file()]
    if missing:
        raise ModelFileError(f"{run_dir}: artefact missing: {', '.join(missing)}")
    split = read_split(run_dir / layout.SPLIT)
    images, labels = split.paths("val")
    absent = [p for p in images if not p.is_file()]
    if absent:
        raise ModelFileError(
            f"{run_dir / layout.SPLIT}: {len(absent)} val image(s) not found, e.g. {absent[0]}",
            hint="bench needs the dataset the run was built from at the same path",
        )
    pre = read_preprocessing(run_dir / layout.PREPROCESSING)
    results = measure_models(models, images, labels, split.classes, pre, profile.benchmark, log=log)
    summaries = read_manifest_summaries(manifest.get("stages"))
    # The build's decision stands: a re-measurement reports on what was shipped, it does not re-choose.
    deployed = manifest.get("deployed_artifact") or build_plan(profile).deployed_artifact
    report = compose_report(profile, results, summaries, deployed)
    output.mkdir(parents=True, exist_ok=True)
    publish_report(output, report)
    return report


def bench(
    run_dir: Path,
    baseline: Path | None = None,
    tolerances: Tolerances | None = None,
    junit: Path | None = None,
    measure: bool = True,
    output: Path | None = None,
    compare_across_machines: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> BenchOutcome:
    """Measure (or read) the run's report, compare it with `baseline`, write JUnit if asked."""
    run_dir = Path(run_dir)
    report_dir = Path(output) if output else run_dir / layout.RERUN_DIR
    # Paths written only after measuring are checked now, so a typo does not cost a benchmark run.
    if report_dir.exists() and not report_dir.is_dir():
        raise UserInputError(f"{report_dir}: exists and is not a folder; the new report is written there (--output)")
    if junit is not None and Path(junit).is_dir():
        raise UserInputError(f"--junit {junit}: is a folder, expected the path of an XML file")
    for option, path in (("--junit", junit), ("--output", report_dir)):
        blocker = nearest_existing(Path(path).absolute().parent) if path is not None else None
        if blocker is not None and not blocker.is_dir():
            raise UserInputError(f"{option} {path}: {blocker} is a file, not a folder (Not a directory)")
    _manifest(run_dir)
    # Read the baseline first: a wrong --baseline fails at once, before minutes of measuring and writing bench/.
    reference = load_report(Path(baseline)) if baseline is not None else None
    if measure:
        report = measure_run(run_dir, report_dir, log)
    else:
        report, report_dir = load_report(run_dir / "report.json"), run_dir
    checks: list[Check] = []
    if reference is not None:
        tolerances = tolerances or Tolerances()
        checks = compare_reports(report, reference, tolerances, compare_across_machines=compare_across_machines)
        if junit is not None:
            write_junit(checks, Path(junit), properties=junit_properties(report, reference, tolerances))
    return BenchOutcome(report, report_dir, checks, measure)
