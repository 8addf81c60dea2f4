"""Compare a build's `report.json` against a baseline report, so CI can catch regressions.

Accuracy, latency, size and throughput are checked per artefact against explicit tolerances. Numbers
that are not comparable are *skipped* with a reason rather than compared: timings from a different
machine or thread count say nothing about the model, and accuracies on different evaluation sets say
nothing about each other. A skipped check never fails a build; only a `fail` does.

Results come out as `Check` records, a plain-text table for CI logs (`format_diff`) and a JUnit XML
file that CI systems render natively (`write_junit`). Stdlib only: this runs where torch is absent.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgetl.errors import UserInputError
from edgetl.files import atomic_path

SCHEMA_PREFIX = "edgetl.report/"
# The report versions this edgetl can read; a newer one may mean something else by the same field.
KNOWN_SCHEMAS = ("edgetl.report/1", "edgetl.report/2")
# The latency percentiles a report records (edgetl.measure.latency): anything else would compare nothing.
RECORDED_PERCENTILES = ("p50", "p90", "p99")
MAX_REPORT_BYTES = 256 << 20  # a report with per-image predictions of a large val set is a few MB

# Machine fields that change benchmark numbers (same set as `edgetl.machine.machine_signature`).
MACHINE_KEYS = ("cpu", "architecture", "usable_cpus", "cpu_flags")
# Eval fields that define the evaluation set; accuracies are comparable only when they match.
EVAL_KEYS = ("split", "images", "classes")

STATUSES = ("pass", "fail", "skipped", "improved")

# Absorbs float noise so that a change exactly at the tolerance passes (e.g. 11.5 ms vs 10 ms at 15%).
_EPSILON = 1e-9


@dataclass(frozen=True)
class Tolerances:
    """How much worse than the baseline a build may get before the comparison fails.

    Relative tolerances are fractions (0.15 = 15%); accuracy is in percentage points, because a
    relative accuracy tolerance would be looser for good models than for bad ones.
    """

    accuracy_points: float = 1.0
    latency_relative: float = 0.15
    latency_percentile: str = "p50"
    size_relative: float = 0.05
    throughput_relative: float = 0.15

    def __post_init__(self) -> None:
        for name in ("accuracy_points", "latency_relative", "size_relative", "throughput_relative"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
                raise UserInputError(f"tolerance {name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.latency_percentile, str) or self.latency_percentile not in RECORDED_PERCENTILES:
            raise UserInputError(
                f"latency percentile must be one that reports record ({', '.join(RECORDED_PERCENTILES)}), "
                f"got {self.latency_percentile!r}"
            )


@dataclass(frozen=True)
class Check:
    """One compared (or deliberately not compared) number for one artefact.

    `baseline` and `current` are in `unit`: accuracy in percent ("%"), latency in "ms", size in
    "bytes", throughput in "images/s"; None where the report has no such number.
    """

    artifact: str
    metric: str
    baseline: float | None
    current: float | None
    unit: str
    limit_description: str
    status: str
    message: str

    @property
    def change(self) -> float | None:
        """Percentage points for accuracy, relative change (0.3 = +30%) for everything else."""
        if self.baseline is None or self.current is None:
            return None
        if self.unit == "%":
            return self.current - self.baseline
        if self.baseline == 0:
            return None
        return self.current / self.baseline - 1.0

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "change": self.change}


# --------------------------------------------------------------------------- loading


def load_report(path: Path) -> dict[str, Any]:
    """Read and sanity-check a report; every unusable file is one clear line naming the file.

    A run directory holding a `report.json` is accepted too, since that is what people point at.
    """
    path = Path(path)
    if path.is_dir() and (path / "report.json").is_file():
        path = path / "report.json"
    hint = "pass a report.json written by `edgetl build`"
    if not path.exists():
        raise UserInputError(f"report file {path} not found", hint=hint)
    if path.is_dir():
        raise UserInputError(f"report path {path} is a directory without a report.json", hint=hint)
    if not path.is_file():  # a FIFO would block forever, a device never end
        raise UserInputError(f"report path {path} is not a regular file", hint=hint)
    if path.stat().st_size > MAX_REPORT_BYTES:
        raise UserInputError(f"report file {path} is over {MAX_REPORT_BYTES >> 20} MB: not an edgetl report", hint=hint)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"report file {path} is not UTF-8 text: {exc.reason}", hint=hint) from exc
    except OSError as exc:
        raise UserInputError(f"cannot read report file {path}: {exc.strerror or exc}") from exc
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserInputError(
            f"report file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", hint=hint
        ) from exc
    except RecursionError:
        raise UserInputError(f"report file {path} is nested too deeply to be an edgetl report", hint=hint) from None
    if not isinstance(report, dict):
        raise UserInputError(f"report file {path} is not an edgetl report (top level is not an object)", hint=hint)
    schema = report.get("schema")
    if schema is None:
        raise UserInputError(f"report file {path} is not an edgetl report (no 'schema' field)", hint=hint)
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        raise UserInputError(
            f"report file {path} has schema {schema!r}, expected '{SCHEMA_PREFIX}<version>'", hint=hint
        )
    if schema not in KNOWN_SCHEMAS:
        raise UserInputError(
            f"report file {path} has schema {schema!r}, which this edgetl cannot read (it reads "
            f"{', '.join(KNOWN_SCHEMAS)})",
            hint="compare with the edgetl version that wrote it",
        )
    if not isinstance(report.get("artifacts"), dict):
        raise UserInputError(f"report file {path} has no 'artifacts' section", hint=hint)
    return report


# --------------------------------------------------------------------------- comparing


def _number(value: Any) -> float | None:
    """A finite float, or None for anything else (missing, null, text, NaN): never crash on odd reports."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def _signed_pct(fraction: float) -> str:
    return f"{fraction * 100:+.1f}%"


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]" if len(value) <= 6 else f"{len(value)} entries"
    return repr(value)


def _differences(current: Any, baseline: Any, keys: Sequence[str], section: str) -> list[str]:
    """Human-readable differences in `keys` between two report sections (missing sections count)."""
    current = current if isinstance(current, dict) else None
    baseline = baseline if isinstance(baseline, dict) else None
    if current is None or baseline is None:
        which = "current" if current is None else "baseline"
        if current is None and baseline is None:
            which = "either"
        return [f"{section} not recorded in {which} report"]
    found = []
    for key in keys:
        if key not in current and key not in baseline:
            continue
        mine, theirs = current.get(key), baseline.get(key)
        if key == "cpu_flags" and isinstance(mine, list) and isinstance(theirs, list):
            if sorted(map(str, mine)) != sorted(map(str, theirs)):
                extra = sorted(set(map(str, mine)) - set(map(str, theirs)))
                gone = sorted(set(map(str, theirs)) - set(map(str, mine)))
                found.append(f"cpu_flags differ (+{extra or '[]'} / -{gone or '[]'} vs baseline)")
            continue
        if mine != theirs:
            found.append(f"{key} {_show(mine)} vs {_show(theirs)} baseline")
    return found


def _timing_differences(current: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """Why timings from the two reports cannot be compared (empty when they can)."""
    found = _differences(current.get("machine"), baseline.get("machine"), MACHINE_KEYS, "machine")
    current_threads = (current.get("settings") or {}).get("threads")
    baseline_threads = (baseline.get("settings") or {}).get("threads")
    if current_threads != baseline_threads:
        found.append(f"threads {current_threads} vs {baseline_threads} baseline")
    return found


def _eval_differences(current: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    return _differences(current.get("eval"), baseline.get("eval"), EVAL_KEYS, "eval set")


def _skip(artifact: str, metric: str, base: float | None, cur: float | None, unit: str, limit: str, why: str) -> Check:
    label = metric.replace("_", " ")
    return Check(artifact, metric, base, cur, unit, limit, "skipped", f"{artifact} {label} not compared: {why}")


def _judge(worse_by: float, tolerance: float) -> str:
    """`worse_by` > 0 means worse than the baseline (in the metric's own sense)."""
    if worse_by > tolerance + _EPSILON:
        return "fail"
    if -worse_by > tolerance + _EPSILON:
        return "improved"
    return "pass"


_VERDICT = {"pass": "ok", "fail": "REGRESSION", "improved": "IMPROVED"}


def _accuracy_of(entry: dict[str, Any]) -> tuple[float | None, str]:
    """Accuracy in percent and a '(149/153)' suffix when the counts are recorded."""
    correct, total = _number(entry.get("correct")), _number(entry.get("total"))
    accuracy = _number(entry.get("accuracy"))
    if accuracy is None and correct is not None and total:
        accuracy = correct / total
    counts = f" ({int(correct)}/{int(total)})" if correct is not None and total is not None else ""
    return (None if accuracy is None else accuracy * 100.0), counts


def _check_accuracy(
    name: str, cur: dict[str, Any], base: dict[str, Any], tol: Tolerances, eval_diff: list[str]
) -> Check:
    limit = f"accuracy drop <= {tol.accuracy_points:g} points"
    current, current_counts = _accuracy_of(cur)
    baseline, baseline_counts = _accuracy_of(base)
    if eval_diff:
        why = "evaluation sets differ (" + "; ".join(eval_diff) + "), accuracies are not comparable"
        return _skip(name, "accuracy", baseline, current, "%", limit, why)
    cur_total, base_total = _number(cur.get("total")), _number(base.get("total"))
    if cur_total is not None and base_total is not None and cur_total != base_total:
        why = f"evaluated on {int(cur_total)} vs {int(base_total)} images baseline, accuracies are not comparable"
        return _skip(name, "accuracy", baseline, current, "%", limit, why)
    if current is None or baseline is None:
        return _skip(name, "accuracy", baseline, current, "%", limit, "accuracy not recorded in both reports")
    status = _judge(baseline - current, tol.accuracy_points)
    message = (
        f"{name} accuracy {current:.2f}%{current_counts} vs {baseline:.2f}%{baseline_counts} baseline: "
        f"{current - baseline:+.2f} points (tolerance -{tol.accuracy_points:g} points) {_VERDICT[status]}"
    )
    return Check(name, "accuracy", baseline, current, "%", limit, status, message)


def _check_latency(
    name: str, cur: dict[str, Any], base: dict[str, Any], tol: Tolerances, timing_diff: list[str]
) -> Check:
    pct = tol.latency_percentile
    metric = f"latency_{pct}"
    limit = f"latency {pct} slowdown <= +{_pct(tol.latency_relative)}"
    cur_lat = cur.get("latency_ms") if isinstance(cur.get("latency_ms"), dict) else {}
    base_lat = base.get("latency_ms") if isinstance(base.get("latency_ms"), dict) else {}
    current, baseline = _number(cur_lat.get(pct)), _number(base_lat.get(pct))
    if timing_diff:
        why = "benchmark conditions differ (" + "; ".join(timing_diff) + "), timings are not comparable"
        return _skip(name, metric, baseline, current, "ms", limit, why)
    if cur_lat.get("batch", 1) != base_lat.get("batch", 1):
        why = f"latency batch size {cur_lat.get('batch', 1)} vs {base_lat.get('batch', 1)} baseline"
        return _skip(name, metric, baseline, current, "ms", limit, why)
    if current is None or baseline is None or baseline <= 0:
        return _skip(name, metric, baseline, current, "ms", limit, f"latency {pct} not recorded in both reports")
    change = current / baseline - 1.0
    status = _judge(change, tol.latency_relative)
    message = (
        f"{name} latency {pct} {current:.2f} ms vs {baseline:.2f} ms baseline: {_signed_pct(change)} "
        f"(tolerance +{_pct(tol.latency_relative)}) {_VERDICT[status]}"
    )
    return Check(name, metric, baseline, current, "ms", limit, status, message)


def _check_size(name: str, cur: dict[str, Any], base: dict[str, Any], tol: Tolerances) -> Check:
    limit = f"size growth <= +{_pct(tol.size_relative)}"
    current, baseline = _number(cur.get("size_bytes")), _number(base.get("size_bytes"))
    if current is None or baseline is None or baseline <= 0:
        return _skip(name, "size", baseline, current, "bytes", limit, "size not recorded in both reports")
    change = current / baseline - 1.0
    status = _judge(change, tol.size_relative)
    message = (
        f"{name} size {current / 1e6:.2f} MB vs {baseline / 1e6:.2f} MB baseline: {_signed_pct(change)} "
        f"(tolerance +{_pct(tol.size_relative)}) {_VERDICT[status]}"
    )
    return Check(name, "size", baseline, current, "bytes", limit, status, message)


def _check_throughput(
    name: str,
    cur: dict[str, Any],
    base: dict[str, Any],
    tol: Tolerances,
    timing_diff: list[str],
    batch_diff: str | None,
) -> Check | None:
    """None when neither report measured throughput (it is optional in a profile)."""
    limit = f"throughput drop <= {_pct(tol.throughput_relative)}"
    cur_tp = cur.get("throughput") if isinstance(cur.get("throughput"), dict) else {}
    base_tp = base.get("throughput") if isinstance(base.get("throughput"), dict) else {}
    current, baseline = _number(cur_tp.get("images_per_second")), _number(base_tp.get("images_per_second"))
    if current is None and baseline is None:
        return None
    if current is None or baseline is None or baseline <= 0:
        which = "current" if current is None else "baseline"
        return _skip(name, "throughput", baseline, current, "images/s", limit, f"not measured in the {which} report")
    if timing_diff:
        why = "benchmark conditions differ (" + "; ".join(timing_diff) + "), timings are not comparable"
        return _skip(name, "throughput", baseline, current, "images/s", limit, why)
    if batch_diff:
        return _skip(name, "throughput", baseline, current, "images/s", limit, batch_diff)
    change = current / baseline - 1.0
    status = _judge(-change, tol.throughput_relative)
    message = (
        f"{name} throughput {current:.1f} images/s vs {baseline:.1f} images/s baseline: {_signed_pct(change)} "
        f"(tolerance -{_pct(tol.throughput_relative)}) {_VERDICT[status]}"
    )
    return Check(name, "throughput", baseline, current, "images/s", limit, status, message)


def compare_reports(
    current: dict[str, Any],
    baseline: dict[str, Any],
    tolerances: Tolerances | None = None,
    artifacts: list[str] | None = None,
    *,
    compare_across_machines: bool = False,
) -> list[Check]:
    """Compare every artefact (or the named ones) of `current` against `baseline`.

    Artefacts only in the baseline fail (a build silently dropping its int8 model is a regression);
    artefacts only in the current report are listed as skipped. Timings are skipped when machine or
    thread settings differ unless `compare_across_machines` is set; accuracies are skipped when the
    evaluation sets differ. Raises `UserInputError` for a requested artefact that neither report has.
    """
    tol = tolerances if tolerances is not None else Tolerances()
    cur_artifacts: dict[str, Any] = current.get("artifacts") or {}
    base_artifacts: dict[str, Any] = baseline.get("artifacts") or {}
    if artifacts is None:
        names = list(base_artifacts) + [n for n in cur_artifacts if n not in base_artifacts]
    else:
        names = list(dict.fromkeys(artifacts))
        unknown = [n for n in names if n not in cur_artifacts and n not in base_artifacts]
        if unknown:
            known = sorted(set(cur_artifacts) | set(base_artifacts))
            raise UserInputError(
                f"artefact(s) {', '.join(unknown)} in neither report", hint=f"known: {', '.join(known) or 'none'}"
            )

    timing_diff = [] if compare_across_machines else _timing_differences(current, baseline)
    eval_diff = _eval_differences(current, baseline)
    cur_batch = (current.get("settings") or {}).get("throughput_batch_size")
    base_batch = (baseline.get("settings") or {}).get("throughput_batch_size")
    batch_diff = f"throughput batch size {cur_batch} vs {base_batch} baseline" if cur_batch != base_batch else None

    checks: list[Check] = []
    for name in names:
        if name not in cur_artifacts:
            checks.append(
                Check(
                    name,
                    "missing",
                    None,
                    None,
                    "",
                    "every baseline artefact is built",
                    "fail",
                    f"{name} is in the baseline report but missing from the current one REGRESSION",
                )
            )
            continue
        if name not in base_artifacts:
            checks.append(
                Check(
                    name,
                    "new",
                    None,
                    None,
                    "",
                    "no baseline to compare with",
                    "skipped",
                    f"{name} is new (not in the baseline report): nothing to compare",
                )
            )
            continue
        cur = cur_artifacts[name] if isinstance(cur_artifacts[name], dict) else {}
        base = base_artifacts[name] if isinstance(base_artifacts[name], dict) else {}
        checks.append(_check_accuracy(name, cur, base, tol, eval_diff))
        checks.append(_check_latency(name, cur, base, tol, timing_diff))
        checks.append(_check_size(name, cur, base, tol))
        throughput = _check_throughput(name, cur, base, tol, timing_diff, batch_diff)
        if throughput is not None:
            checks.append(throughput)
    if not any(check.status in ("pass", "fail", "improved") for check in checks):
        # Fail closed: a gate that compared nothing (no common artefact, every number skipped) must not pass.
        skipped = sum(check.status == "skipped" for check in checks)
        checks.append(
            Check(
                "(all)",
                "compared",
                None,
                None,
                "",
                "at least one number compared",
                "fail",
                f"nothing was compared ({skipped} check(s) skipped, {len(names)} artefact(s)): the regression "
                "gate cannot pass on no evidence",
            )
        )
    return checks


def passed(checks: Iterable[Check]) -> bool:
    """True unless some check failed: skipped and improved checks never fail a build."""
    return not any(check.status == "fail" for check in checks)


def counts(checks: Iterable[Check]) -> dict[str, int]:
    """How many checks ended in each status (all statuses present, zeros included)."""
    tally = dict.fromkeys(STATUSES, 0)
    for check in checks:
        tally[check.status] = tally.get(check.status, 0) + 1
    return tally


# --------------------------------------------------------------------------- output


def _value_text(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{value:.2f}%"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "bytes":
        return f"{value / 1e6:.2f} MB"
    if unit == "images/s":
        return f"{value:.1f} img/s"
    return f"{value:g} {unit}".strip()


def _change_text(check: Check) -> str:
    change = check.change
    if change is None:
        return "-"
    if check.unit == "%":
        return f"{change:+.2f} pt"
    return _signed_pct(change)


def format_diff(checks: Sequence[Check]) -> str:
    """A fixed-width table for CI logs, then why anything failed or was skipped, then a summary."""
    if not checks:
        return "No checks: the reports have no artefacts to compare."
    headers = ["artifact", "metric", "baseline", "current", "change", "status"]
    rows = [
        [
            c.artifact,
            c.metric,
            _value_text(c.baseline, c.unit),
            _value_text(c.current, c.unit),
            _change_text(c),
            "FAIL" if c.status == "fail" else c.status,
        ]
        for c in checks
    ]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    numeric = {2, 3, 4}

    def line(cells: list[str]) -> str:
        parts = [
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    notes = [c.message for c in checks if c.status in ("fail", "skipped")]
    if notes:
        out += ["", *notes]
    tally = counts(checks)
    verdict = "PASSED" if passed(checks) else "FAILED"
    out += [
        "",
        f"{verdict}: {len(checks)} checks, {tally['pass']} passed, {tally['improved']} improved, "
        f"{tally['fail']} failed, {tally['skipped']} skipped",
    ]
    return "\n".join(out)


def junit_properties(current: dict[str, Any], baseline: dict[str, Any], tolerances: Tolerances) -> dict[str, str]:
    """Provenance for the JUnit file: which baseline was compared, and how strictly."""
    props: dict[str, str] = {}
    for prefix, report in (("baseline", baseline), ("current", current)):
        for key in ("profile", "created", "deployed_artifact", "edgetl_version"):
            if report.get(key) is not None:
                props[f"{prefix}.{key}"] = str(report[key])
    for key, value in asdict(tolerances).items():
        props[f"tolerance.{key}"] = str(value)
    return props


def write_junit(
    checks: Sequence[Check],
    path: Path,
    suite_name: str = "edgetl.bench",
    *,
    properties: dict[str, str] | None = None,
) -> Path:
    """Write JUnit XML (one testcase per check) atomically, so CI never reads a half-written file.

    `properties` (e.g. from `junit_properties`) become <property> entries of the suite.
    """
    path = Path(path)
    tally = counts(checks)
    suite = ET.Element(
        "testsuite",
        {
            "name": suite_name,
            "tests": str(len(checks)),
            "failures": str(tally["fail"]),
            "errors": "0",
            "skipped": str(tally["skipped"]),
            "time": "0",
        },
    )
    if properties:
        props = ET.SubElement(suite, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", {"name": str(key), "value": str(value)})
    for check in checks:
        case = ET.SubElement(
            suite, "testcase", {"classname": f"{suite_name}.{check.artifact}", "name": check.metric, "time": "0"}
        )
        detail = (
            f"baseline: {_value_text(check.baseline, check.unit)}\n"
            f"current: {_value_text(check.current, check.unit)}\n"
            f"change: {_change_text(check)}\n"
            f"limit: {check.limit_description}"
        )
        if check.status == "fail":
            failure = ET.SubElement(case, "failure", {"message": check.message, "type": "regression"})
            failure.text = detail
        elif check.status == "skipped":
            ET.SubElement(case, "skipped", {"message": check.message})
        else:
            ET.SubElement(case, "system-out").text = f"{check.message}\n{detail}"
    ET.indent(suite)
    with atomic_path(path) as temp:
        ET.ElementTree(suite).write(temp, encoding="utf-8", xml_declaration=True)
    return path
