"""The build report: every artefact side by side, ratios against the float baseline, budgets.

`report.json` is versioned (`schema`) for CI tooling; `report.md` is for people; the same table is
printed at the end of `edgetl build`.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from rich.console import Console
from rich.table import Table

from edgetl import __version__, layout, stats
from edgetl.files import write_json_atomic, write_text_atomic
from edgetl.profile import Profile
from edgetl.report.budgets import budget_view, evaluate_budgets
from edgetl.report.regression import KNOWN_SCHEMAS
from edgetl.report.sections import (
    browser_lines,
    data_lines,
    deployment_lines,
    on_device_lines,
    per_class_lines,
    performance_lines,
    quantization_lines,
    statistics_lines,
    tuning_lines,
)
from edgetl.summaries import (
    BrowserSummary,
    ConvertSummary,
    DataSummary,
    DeviceSummary,
    ExportSummary,
    FinetuneSummary,
    OptimizeSummary,
    PackageSummary,
    Summary,
    as_kind,
)

SummaryT = TypeVar("SummaryT", bound=Summary)
REPORT_SCHEMA = KNOWN_SCHEMAS[-1]  # the newest version, written by this edgetl


def _artifact_entries(results: dict[str, Any], baseline: str, seed: int = 0) -> dict[str, dict[str, Any]]:
    measured = results["artifacts"]
    base = measured[baseline]
    base_predictions = np.asarray(base["predictions"])
    labels = np.asarray(results["eval"]["labels"])
    classes = results["eval"]["classes"]
    entries: dict[str, dict[str, Any]] = {}
    for name, item in measured.items():
        predictions = np.asarray(item["predictions"])
        entries[name] = {
            key: item[key]
            for key in (
                "file",
                "format",
                "precision",
                "runtime",
                "size_bytes",
                "correct",
                "total",
                "accuracy",
                "latency_ms",
                "throughput",
                "predictions",
            )
        }
        entries[name].update(
            {key: item.get(key) for key in ("backend", "execution", "batch_sweep", "memory", "compute")}
        )
        entries[name]["statistics"] = stats.compare_to_baseline(labels, base_predictions, predictions, seed=seed)
        entries[name]["per_class"] = stats.per_class_accuracy(labels, predictions, classes)
        entries[name]["confusion_matrix"] = stats.confusion_matrix(labels, predictions, len(classes))
        entries[name].update(budget_view(measured, name, baseline))
    return entries


def _summary(stages: Mapping[str, Summary], name: str, kind: type[SummaryT]) -> SummaryT | None:
    """Stage `name`'s summary as its type, or None where the stage did not run in this build."""
    return as_kind(name, stages[name], kind) if name in stages else None


def _fields(summary: Summary | None) -> dict[str, Any] | None:
    """A summary as report.json records it: its fields, without the stage cache's schema tag."""
    if summary is None:
        return None
    return {key: value for key, value in summary.to_dict().items() if key != "schema"}


def compose_report(
    profile: Profile,
    results: dict[str, Any],
    stages: Mapping[str, Summary],
    deployed: str,
    tuning: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report of one build from its stages' summaries; `tuning` is `edgetl tune`'s, for its final pick."""
    baseline = profile.benchmark.baseline
    artifacts = _artifact_entries(results, baseline, profile.seed)
    budgets = evaluate_budgets(profile.budgets, artifacts, deployed)
    finetune = _summary(stages, "finetune", FinetuneSummary)
    export = _summary(stages, "export", ExportSummary)
    optimize = _summary(stages, "optimize", OptimizeSummary)
    convert = _summary(stages, "convert", ConvertSummary)
    return {
        "schema": REPORT_SCHEMA,
        "edgetl_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "profile": profile.name,
        "target": profile.target,
        "deployed_artifact": deployed,
        "baseline": baseline,
        "eval": {
            "split": results["eval"]["split"],
            "images": results["eval"]["images"],
            "classes": results["eval"]["classes"],
            "labels": results["eval"]["labels"],
            "note": "val images are never used for training, early stopping or int8 calibration"
            if profile.data.tune_holdout is None
            else f"a tuning trial: scored on a tune holdout ({profile.data.tune_holdout:.0%} of each train class), "
            "not on val, which this build did not use",
        },
        "machine": results["machine"],
        "peaks": results.get("peaks") or {},
        "versions": results["versions"],
        "settings": results["settings"],
        "artifacts": artifacts,
        "budgets": [b.to_dict() for b in budgets],
        "passed": all(b.passed for b in budgets),
        "training": {
            key: getattr(finetune, key, None)
            for key in (
                "backbone",
                "strategy",
                "strategy_detail",
                "auto",
                "head_init",
                "epochs_run",
                "best_epoch",
                "best_holdout_accuracy",
                "trainable_parameters",
                "total_parameters",
                "train_seconds",
                "device",
                "world_size",
                "mixed_precision",
                "cached_features",
                "stopped_early",
                "resumed_from_epoch",
            )
        },
        "export": export.parity if export else None,
        "quantization": optimize.int8 if optimize else None,
        "fp16": optimize.fp16 if optimize else None,
        "data": _fields(_summary(stages, "data", DataSummary)),
        "package": _fields(_summary(stages, "package", PackageSummary)),
        "on_device": _fields(_summary(stages, "device", DeviceSummary)),
        "browser": _fields(_summary(stages, "browser", BrowserSummary)),
        "conversions": convert.artifacts if convert else {},
        "deployment": results.get("deployment"),
        "tuning": tuning,
    }


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _rows(report: dict[str, Any]) -> list[list[str]]:
    baseline = report["baseline"]
    rows = []
    for name, a in report["artifacts"].items():
        throughput = a["throughput"]
        fixed_batch = f" [batch {a['latency_ms']['batch']}]" if a["latency_ms"]["batch"] != 1 else ""
        rows.append(
            [
                name + (" (deployed)" if name == report["deployed_artifact"] else "") + fixed_batch,
                f"{a['accuracy']:.2%} ({a['correct']}/{a['total']})",
                f"{a['agreement']:.2%}",
                _ms(a["latency_ms"]["p50"]),
                _ms(a["latency_ms"]["p90"]),
                _ms(a["latency_ms"]["p99"]),
                f"{a['speedup_vs'][baseline]:.2f}x",
                f"{throughput['images_per_second']:.1f}" if throughput else "n/a",
                f"{a['size_bytes'] / 1e6:.2f}",
                f"{a['size_ratio_vs'][baseline]:.2f}x",
            ]
        )
    return rows


def _headers(report: dict[str, Any]) -> list[str]:
    batch = report["settings"]["throughput_batch_size"]
    return [
        "artefact",
        "top-1",
        f"agree w/ {report['baseline']}",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        f"speedup vs {report['baseline']}",
        f"img/s @ batch {batch}",
        "size MB",
        "size vs base",
    ]


_PLOT_TITLES = {"tradeoff": "accuracy vs latency vs size", "latency": "latency distributions"}


def publish_report(run_dir: Path, report: dict[str, Any]) -> set[str]:
    """Write report.json, the plots, report.md and a self-contained report.html; return what was written."""
    written = {layout.REPORT_JSON, layout.REPORT_MD}
    from edgetl.report.plots import write_plots

    try:
        plots = {
            name: f"{layout.REPORT_PLOTS_DIR}/{file}"
            for name, file in write_plots(report, run_dir / layout.REPORT_PLOTS_DIR).items()
        }
    except ImportError:  # matplotlib is in the build extra; a runtime-only install reports without plots
        plots = {}
    written |= set(plots.values())
    write_json_atomic(run_dir / layout.REPORT_JSON, report)
    write_text_atomic(run_dir / layout.REPORT_MD, render_markdown(report, plots))
    from edgetl.report.html import write_html

    write_html(run_dir / layout.REPORT_MD, run_dir / layout.REPORT_HTML)
    return written | {layout.REPORT_HTML}


def render_markdown(report: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    settings = report["settings"]
    machine = report["machine"]
    lines = [
        f"# edgetl report: {report['profile']}",
        "",
        f"Target `{report['target']}`; deployed artefact **{report['deployed_artifact']}**; "
        f"baseline `{report['baseline']}`. "
        f"Evaluated on **{report['eval']['images']} {report['eval']['split']} images**, "
        f"{len(report['eval']['classes'])} classes ({report['eval']['note']}).",
        "",
        "| " + " | ".join(_headers(report)) + " |",
        "|" + "---|" * len(_headers(report)),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(report)]
    lines += [
        "",
        f"Latency: batch 1, {settings['threads']} thread(s), {settings['warmup']} warm-up runs, "
        f"{settings['iterations']} timed runs interleaved across artefacts in {settings['rounds']} rounds. "
        f"Throughput: median of {settings['throughput_iterations']} batches. All figures measured on this machine, "
        "none estimated.",
        "",
        "Speedups between every pair (row is faster than column by):",
        "",
        "| | " + " | ".join(report["artifacts"]) + " |",
        "|---|" + "---|" * len(report["artifacts"]),
    ]
    for name, a in report["artifacts"].items():
        lines.append(f"| {name} | " + " | ".join(f"{a['speedup_vs'][o]:.2f}x" for o in report["artifacts"]) + " |")
    lines += ["", "## Budgets", ""]
    if report["budgets"]:
        lines += ["| budget | result | detail |", "|---|---|---|"]
        lines += [
            f"| {b['name']} | {'pass' if b['passed'] else '**FAIL**'} | {b['message']} |" for b in report["budgets"]
        ]
    else:
        lines.append("No budgets set in the profile.")
    lines += data_lines(report)
    training = report.get("training") or {}
    if training.get("backbone"):
        head = training.get("head_init") or {}
        auto = training.get("auto")
        lines += [
            "",
            "## Fine-tuning",
            "",
            f"- backbone `{training['backbone']}`, {training.get('strategy_detail') or training['strategy']}; "
            f"{training['trainable_parameters']:,} trainable of {training['total_parameters']:,} parameters",
        ]
        if auto:
            lines.append(f"- strategy chosen by `auto`: {auto['reason']}")
        lines += [
            f"- head initialisation: {head.get('mode')}"
            + (
                f" ({', '.join(f'{k} <- {v}' for k, v in head.get('matches', {}).items())})"
                if head.get("matches")
                else ""
            )
            + (f" ({head['reason']})" if head.get("reason") else ""),
            f"- {training['epochs_run']} epochs, best epoch {training['best_epoch']}"
            + (
                f" (holdout accuracy {training['best_holdout_accuracy']:.2%})"
                if training.get("best_holdout_accuracy") is not None
                else ""
            )
            + f"; {training.get('train_seconds') or 0:.0f} s on {training.get('device')}"
            + (f" x {training['world_size']} processes" if (training.get("world_size") or 1) > 1 else ""),
            "",
            "![training curves](training/curves.png)",
        ]
    parity = report.get("export")
    if parity:
        lines += [
            "",
            "## Export",
            "",
            f"- ONNX vs PyTorch on {parity['images']} real images: max |logit diff| {parity['max_abs_logit_diff']:.2e} "
            f"(tolerance {parity['tolerance']:g}), top-1 agreement {parity['top1_agreement']:.0%}",
        ]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{_PLOT_TITLES.get(name, name)}]({path})" for name, path in plots.items()]
    lines += statistics_lines(report)
    lines += per_class_lines(report)
    lines += performance_lines(report)
    lines += quantization_lines(report)
    lines += deployment_lines(report)
    lines += browser_lines(report)
    lines += on_device_lines(report)
    lines += tuning_lines(report)
    lines += [
        "",
        "## Machine",
        "",
        f"- {machine['cpu']} ({machine['architecture']}), {machine['usable_cpus']} usable CPUs, "
        f"flags: {', '.join(machine['cpu_flags']) or 'none of interest'}",
        f"- {machine['os']}, Python {machine['python']}; "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if k not in ("python",)),
        "",
    ]
    return "\n".join(lines)


def print_table(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"edgetl {report['profile']}: {report['eval']['images']} {report['eval']['split']} images")
    for header in _headers(report):
        table.add_column(header, justify="left" if header == "artefact" else "right")
    for row in _rows(report):
        table.add_row(*row)
    console.print(table)
    for budget in report["budgets"]:
        style = "green" if budget["passed"] else "bold red"
        console.print(f"[{style}]{'PASS' if budget['passed'] else 'FAIL'}[/] {budget['message']}")
