"""What each stage reports about its run, typed: read by attribute by later stages, the pipeline and the report.

A stage's `run` returns one of these; the stage cache stores it as a dict with its schema (stage.json)
and reads it back with `from_dict`, so a summary written by an older edgetl (another schema) is never
mistaken for a result: the stage runs again. Nested measurements (a quantization record, a latency
table) stay plain JSON values: they are written into report.json as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

S = TypeVar("S", bound="Summary")


def as_kind(stage: str, summary: Summary, kind: type[S]) -> S:
    """`summary` (stage `stage`'s) as `kind`, which it must be: a mix-up of stages fails loudly here."""
    if not isinstance(summary, kind):
        raise TypeError(f"stage {stage} summary is {type(summary).__name__}, not {kind.__name__}")
    return summary


class StaleSummary(ValueError):
    """A stored summary of another schema (an older edgetl): its stage must run again."""


@dataclass(frozen=True)
class Summary:
    SCHEMA: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_dict(cls: type[S], data: Any) -> S:
        if not isinstance(data, dict) or data.get("schema") != cls.SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise StaleSummary(f"summary schema {found!r}, expected {cls.SCHEMA!r}")
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{key: value for key, value in data.items() if key in names})
        except TypeError as error:  # a field missing: written by another edgetl
            raise StaleSummary(str(error)) from None


@dataclass(frozen=True)
class DataSummary(Summary):
    SCHEMA: ClassVar[str] = "edgetl.summary.data/1"
    root: str
    classes: list[str]
    counts: dict[str, int]  # images per subset
    val_source: str
    skipped_files: int
    warnings: int
    imbalance: float


@dataclass(frozen=True)
class FinetuneSummary(Summary):
    SCHEMA: ClassVar[str] = "edgetl.summary.finetune/1"
    backbone: str
    strategy: str
    strategy_detail: str
    train_resolution: int
    train_resolutions: str
    auto: dict[str, Any] | None
    pretrained_weights: str | None
    pretrained_weights_sha256: str | None
    head_init: dict[str, Any]
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    resumed_from_epoch: int | None
    monitor: str
    best_holdout_accuracy: float | None
    best_holdout_loss: float | None
    trainable_parameters: int
    total_parameters: int
    cached_features: bool
    device: str
    mixed_precision: Any
    world_size: int
    train_seconds: float


@dataclass(frozen=True)
class ExportSummary(Summary):
    SCHEMA: ClassVar[str] = "edgetl.summary.export/1"
    opset: int
    ir_version: int
    io: dict[str, Any]
    ops: dict[str, int]
    size_bytes: int
    parity: dict[str, Any]


@dataclass(frozen=True)
class OptimizeSummary(Summary):
    SCHEMA: ClassVar[str] = "edgetl.summary.optimize/1"
    int8: dict[str, Any] | None = None
    fp16: dict[str, Any] | None = None


@dataclass(frozen=True)
class ConvertSummary(Summary):
    SCHEMA: ClassVar[str] = "edgetl.summary.convert/1"
    artifacts: dict[str, Any]


@dataclass(frozen=True)
class BenchmarkSummary(Summary):
    SCHEMA: ClassVar[str] = "edgetl.summary.benchmark/1"
    artifacts: dict[str, dict[str, Any]]  # artefact -> accuracy, p50_ms
    deployed: str
    device_candidates: list[dict[str, Any]]  # what a device may choose between, best build-machine guess first


@dataclass(frozen=True)
class PackageSummary(Summary):
    SCHEMA: ClassVar[str] = "edgetl.summary.package/1"
    target: str
    artifact: str  # the shipped one
    bundle: str
    pixels_model: dict[str, Any]
    engine: dict[str, Any] | None = None  # a TensorRT engine built and measured here
    engine_not_built: str | None = None


@dataclass(frozen=True)
class BrowserSummary(Summary):
    """The web bundle's page in Chromium (`edgetl.measure.browser.check_web_bundle`), or why it did not run."""

    SCHEMA: ClassVar[str] = "edgetl.summary.browser/1"
    checked: bool
    reason: str | None = None
    browser: str | None = None
    machine: dict[str, Any] | None = None
    images: int = 0
    agreement: int = 0
    agreement_percent: float = 0.0
    correct: int = 0
    predict_correct: int = 0
    max_abs_logit_diff: float = 0.0
    disagreements: list[dict[str, Any]] | None = None
    cross_origin_isolated: bool = False
    latency: list[dict[str, Any]] | None = None
    end_to_end: dict[str, Any] | None = None
    method: str | None = None


@dataclass(frozen=True)
class DeviceSummary(Summary):
    SCHEMA: ClassVar[str] = "edgetl.summary.device/1"
    ssh: str
    machine: dict[str, Any] | None
    artifacts: dict[str, dict[str, Any]]
    bench: str


SUMMARY_TYPES: dict[str, type[Summary]] = {
    "data": DataSummary,
    "finetune": FinetuneSummary,
    "export": ExportSummary,
    "optimize": OptimizeSummary,
    "convert": ConvertSummary,
    "benchmark": BenchmarkSummary,
    "package": PackageSummary,
    "browser": BrowserSummary,
    "device": DeviceSummary,
}


def read_manifest_summaries(stages: Any) -> dict[str, Summary]:
    """The stage summaries a run's manifest.json recorded (`edgetl bench RUN` re-reports them).

    A run built by an edgetl that wrote summaries without a schema is read field by field where its
    fields are all there; a stage whose summary cannot be read is left out of the report, not guessed.
    """
    summaries: dict[str, Summary] = {}
    for name, record in (stages or {}).items() if isinstance(stages, dict) else ():
        kind, data = SUMMARY_TYPES.get(name), record.get("summary") if isinstance(record, dict) else None
        if kind is None or not isinstance(data, dict):
            continue
        try:
            summaries[name] = kind.from_dict(data if "schema" in data else {**data, "schema": kind.SCHEMA})
        except StaleSummary:
            continue
    return summaries
