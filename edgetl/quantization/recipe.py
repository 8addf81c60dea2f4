"""int8 quantization, the whole recipe: calibrate, quantize all-int8, improve the weights, QAT, then fall back.

One entry point, like `onnxruntime.quantization.quantize(model_input, model_output, quant_config)`:
`quantize_int8(model_in, model_out, recipe, data, work, log)`. `Int8Recipe` is the settings, resolved
once from the profile (the `optimize.int8` section, the accuracy budget, the target's symmetry, whether
this CPU saturates full-range weights); `Int8Data` is what the recipe learns from, never val.

The steps, each measured on tuning images from the calibration pool (train + holdout):
1. calibrate activation ranges (minmax, percentile or entropy) and quantize all-int8 (QDQ);
2. bias correction and AdaRound as their modes say, each kept only if it helps (`_improve_weights`);
3. quantization-aware training when all-int8 misses the budget, or always (`_maybe_qat`);
4. the accuracy-aware fallback: the most sensitive nodes kept in float until the budget is met, within a
   price limit measured by `edgetl.measure.pricing.FallbackPricer` (`edgetl.quantization.accuracy_aware`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgetl import layout
from edgetl.errors import BudgetExceeded, VerificationError
from edgetl.measure.pricing import FallbackPricer
from edgetl.preprocessing import Preprocessing
from edgetl.profile import Int8Config, Profile
from edgetl.targets import get_target

_CALIBRATION_BATCH = 16
_DEFAULT_MAX_DROP = 1.0
_WEIGHT_STEP_IMAGES = 64  # calibration images AdaRound and bias correction fit on


def accuracy_budget(profile: Profile) -> tuple[float, float | None]:
    """(max drop in points, min agreement in percent) that the fallback must meet on tuning images."""
    aware = profile.optimize.int8.accuracy_aware
    drop = aware.max_accuracy_drop
    if drop is None:
        drop = profile.budgets.max_accuracy_drop if profile.budgets.max_accuracy_drop is not None else _DEFAULT_MAX_DROP
    agreement = aware.min_agreement if aware.min_agreement is not None else profile.budgets.min_agreement
    return drop, agreement


def resolve_reduce_range(profile: Profile) -> bool:
    """`reduce_range: auto`: 7-bit weights only where full-range int8 would saturate (x86 CPU target, no VNNI)."""
    from edgetl.machine import int8_saturates

    setting = profile.optimize.int8.reduce_range
    if setting != "auto":
        return bool(setting)
    return get_target(profile.target).x86_cpu and int8_saturates()


@dataclass(frozen=True)
class Int8Recipe:
    """The int8 settings, resolved: one object instead of a dozen parameters."""

    config: Int8Config  # the profile's optimize.int8 section
    max_drop: float  # accuracy budget on the tuning images, in points
    min_agreement: float | None  # percent of tuning images with fp32's label
    symmetric: bool  # signed int8 activations without zero points (TensorRT)
    reduce_range: bool  # 7-bit weights (x86 CPUs whose u8s8 kernels saturate)
    threads: int  # for the fallback's latency price
    seed: int  # QAT

    @classmethod
    def from_profile(cls, profile: Profile) -> Int8Recipe:
        max_drop, min_agreement = accuracy_budget(profile)
        return cls(
            config=profile.optimize.int8,
            max_drop=max_drop,
            min_agreement=min_agreement,
            symmetric=get_target(profile.target).uses_tensorrt,
            reduce_range=resolve_reduce_range(profile),
            threads=profile.benchmark.threads,
            seed=profile.seed,
        )


@dataclass(frozen=True)
class Int8Data:
    """What the recipe learns from: the calibration pool (train + holdout, never val) and, for QAT, train."""

    preprocessing: Preprocessing
    calibration_pool: tuple[list[Path], list[int]]
    train: tuple[list[Path], list[int]]
    checkpoint: Path  # QAT fine-tunes it
    classes: list[str]  # written into the model's metadata
    root: Path  # calibration images are recorded relative to the dataset root
    export: Callable[[Any, tuple[int, int, int], str], Any]  # PyTorch -> ONNX as the build exports (QAT)


@dataclass(frozen=True)
class Int8Result:
    record: dict[str, Any]  # quantization.json: settings, every step's measurements, ops, float nodes
    ranges: dict[str, Any]  # calibration.json: every tensor's range
    summary: dict[str, Any]  # the short form the report reads


def quantize_int8(
    model_in: Path,
    model_out: Path,
    recipe: Int8Recipe,
    data: Int8Data,
    work: Path,
    log: Callable[[str], None] = lambda message: None,
) -> Int8Result:
    """Quantize `model_in` (fp32 ONNX) to `model_out` (QDQ int8) by the recipe; scratch files go to `work`.

    Raises BudgetExceeded when no model meets both the accuracy budget and the price limit.
    """
    return _Int8Run(recipe, data, work, log).run(model_in, model_out)


class _Int8Run:
    """One quantization: the recipe's steps as methods sharing what they all measure against."""

    settings: Any  # qdq.QuantSettings
    tuning: Any  # accuracy_aware.TuningSet: tuning images, labels, fp32 logits
    budget: tuple[float, float | None, float | None]  # max drop, min agreement, min logit SQNR
    calibration: list[Path]
    batching: tuple[int, bool]  # calibration batch size, and whether the model's batch is fixed

    def __init__(self, recipe: Int8Recipe, data: Int8Data, work: Path, log: Callable[[str], None]) -> None:
        self.recipe, self.data, self.work, self.log = recipe, data, work, log

    def run(self, model_in: Path, model_out: Path) -> Int8Result:
        from edgetl.onnx import tools as onnx_tools
        from edgetl.quantization.accuracy_aware import (
            TuningSet,
            accuracy_aware_quantize,
            infer_logits,
            model_feed,
            predict,
        )
        from edgetl.quantization.calibration import ImageCalibrationReader, compute_ranges
        from edgetl.quantization.qdq import QuantSettings, prepare, quantize_with_ranges, resolve_float_nodes

        cfg, data = self.recipe.config, self.data
        source = model_in
        pre = data.preprocessing
        pool, pool_labels = data.calibration_pool
        calibration = pool[: cfg.calibration_images]
        available = (
            "" if len(calibration) == cfg.calibration_images else f" (all there are; {cfg.calibration_images} asked)"
        )
        fixed = onnx_tools.fixed_batch(onnx_tools.load_model(source))
        is_fixed = fixed is not None
        batch_size = fixed or _CALIBRATION_BATCH
        self.log(
            f"int8 QDQ: {cfg.calibration_method} calibration on {len(calibration)} train images{available}, "
            f"activations {cfg.activation_type}, weights {cfg.weight_type}"
            f"{' per-channel' if cfg.per_channel else ' per-tensor'}",
        )
        work = self.work
        work.mkdir(parents=True, exist_ok=True)
        prepared = work / "prepared.onnx"
        notes = prepare(source, prepared)
        reader = ImageCalibrationReader(calibration, pre, batch_size, layout.INPUT_NAME, fixed_batch=is_fixed)
        ranges = compute_ranges(prepared, reader, cfg.calibration_method, cfg.percentile)
        calibration_summary = ranges.summary()
        if cfg.calibration_method != "minmax":
            self.log(
                f"{cfg.calibration_method} clipped {calibration_summary['tensors_clipped']} of "
                f"{calibration_summary['tensors']} activation ranges "
                f"(median {calibration_summary['median_clipped_fraction']:.0%} of the observed range)",
            )

        float_nodes = resolve_float_nodes(onnx_tools.load_model(prepared), cfg.keep_float, cfg.exclude_nodes)
        symmetric, reduce_range = self.recipe.symmetric, self.recipe.reduce_range
        settings = QuantSettings(cfg.activation_type, cfg.weight_type, cfg.per_channel, reduce_range, symmetric)
        tuning_paths = pool[: cfg.accuracy_aware.tuning_images]
        tuning_batch = pre.batch(tuning_paths)
        fp32_logits = infer_logits(prepared, tuning_batch)
        tuning = TuningSet(
            tuning_batch, np.asarray(pool_labels[: len(tuning_paths)]), fp32_logits.argmax(axis=1), fp32_logits
        )
        max_drop, min_agreement = self.recipe.max_drop, self.recipe.min_agreement
        target = model_out
        target.parent.mkdir(parents=True, exist_ok=True)
        budget = (max_drop, min_agreement, cfg.accuracy_aware.min_logit_sqnr_db)
        # What every step below measures against: kept on the run rather than passed step to step.
        self.settings, self.tuning, self.budget = settings, tuning, budget
        self.calibration, self.batching = calibration, (batch_size, is_fixed)
        int8_source, measured, weight_records = self._improve_weights(prepared, ranges, float_nodes)
        qat_record = None
        quant_source, quant_ranges, quant_float_nodes = int8_source, ranges, float_nodes
        if cfg.qat.mode != "off":
            quant_source, quant_ranges, quant_float_nodes, qat_record, measured = self._maybe_qat(
                int8_source, ranges, float_nodes, measured
            )
        if cfg.accuracy_aware.enabled:
            pricer = FallbackPricer(
                prepared,
                measured[0],  # the all-int8 model already quantized and measured: the limit's reference
                tuning_batch[:1],
                self.recipe.threads,
                None if symmetric else cfg.accuracy_aware.keep_speedup,
                cfg.accuracy_aware.max_size_ratio,
            )
            fallback = accuracy_aware_quantize(
                quant_source,
                target,
                quant_ranges,
                settings,
                quant_float_nodes,
                tuning,
                max_drop,
                min_agreement,
                cfg.accuracy_aware.min_logit_sqnr_db,
                cfg.accuracy_aware.max_float_nodes,
                cfg.accuracy_aware.sensitivity_images,
                log=lambda message: self.log(message),
                price=pricer,
                measured=measured,
            )
            drop, agreement = fallback.final.accuracy_drop_points, fallback.final.agreement
            sqnr = fallback.final.logit_sqnr_db
            fallback_record: dict[str, Any] | None = fallback.to_dict()
        else:
            quant_float_nodes = quantize_with_ranges(
                quant_source, target, quant_ranges, settings, quant_float_nodes, model_feed(prepared, tuning_batch)
            )
            logits = infer_logits(target, tuning_batch)
            drop, agreement = tuning.drop_and_agreement(logits.argmax(axis=1))
            sqnr = tuning.logit_sqnr_db(logits)
            fallback_record = None
        tuning_summary = {"accuracy_drop_points": drop, "agreement": agreement, "logit_sqnr_db": sqnr}
        tuning_summary |= {
            "images": len(tuning_paths),
            "source": "train + holdout (never val)",
            "max_accuracy_drop": max_drop,
            "min_agreement": min_agreement,
            "min_logit_sqnr_db": cfg.accuracy_aware.min_logit_sqnr_db,
        }
        if fallback_record and fallback_record["triggered"]:
            if not fallback.within_budget:
                # Never ship a model that misses the budget or gives away what int8 is for: exit 3, one line.
                raise BudgetExceeded(
                    f"int8: no model meets both the accuracy budget ({_budget_text(max_drop, min_agreement, cfg)} "
                    f"on {len(tuning_paths)} tuning images) and the price limit ({pricer.describe_limit()}): "
                    f"{fallback.summary_line()}",
                    hint="improve the fp32 model, raise optimize.int8.accuracy_aware.max_float_nodes, or loosen its "
                    "keep_speedup / max_size_ratio",
                )
            fallback_record["cost"] = pricer.cost(target)
            self.log(
                f"kept {len(fallback_record['added_float_nodes'])} more node(s) in float: "
                f"{', '.join(fallback_record['added_float_nodes'])}; tuning drop now "
                f"{tuning_summary['accuracy_drop_points']:.2f} points; latency "
                f"{fallback_record['cost']['slowdown']:.2f}x the all-int8 model, "
                f"{fallback_record['cost']['speedup_vs_fp32']:.2f}x fp32 speed",
            )

        model = onnx_tools.load_model(target)
        onnx_tools.embed_metadata(model, data.classes, pre, **{"edgetl.precision": "int8"})
        onnx_tools.check(model, layout.ONNX_INT8)
        onnx_tools.save_model(model, target)
        try:
            predict(target, tuning_batch[:1])
        except Exception as error:
            raise VerificationError(
                f"{layout.ONNX_INT8}: quantized model does not run in ONNX Runtime ({error})"
            ) from None

        ops = onnx_tools.op_census(model)
        all_float = quant_float_nodes + (fallback_record or {}).get("added_float_nodes", [])
        record = {
            "settings": cfg.model_dump(mode="json"),
            "format": "QDQ",
            "symmetric": settings.symmetric,
            "reduce_range": settings.reduce_range,
            "bias": "float (TensorRT fuses it)" if settings.symmetric else "int32",
            "calibration": calibration_summary,
            "calibration_images": [str(p.relative_to(data.root)) for p in calibration],
            "tuning": tuning_summary,
            "qat": qat_record,
            **weight_records,
            "accuracy_aware": fallback_record,
            "ops": ops,
            "size_bytes": target.stat().st_size,
            "fp32_size_bytes": source.stat().st_size,
            "float_nodes": all_float,
            "notes": notes,
        }
        ratio = record["size_bytes"] / record["fp32_size_bytes"]
        self.log(
            f"int8 model {record['size_bytes'] / 1e6:.2f} MB ({ratio:.2f}x the fp32 file); on "
            f"{len(tuning_paths)} tuning images: drop {tuning_summary['accuracy_drop_points']:.2f} points, "
            f"agreement {tuning_summary['agreement']:.2%}",
        )
        summary = {
            "calibration_images": len(calibration),
            "calibration": calibration_summary,
            "quantized_nodes": ops.get("QuantizeLinear", 0),
            "float_nodes": all_float,
            "tuning": tuning_summary,
            "accuracy_aware": _fallback_summary(fallback_record),
            "qat": None if qat_record is None else {k: qat_record.get(k) for k in ("ran", "used", "why")},
            **{k: None if r is None else {f: r[f] for f in ("used", "why")} for k, r in weight_records.items()},
            "size_bytes": record["size_bytes"],
            "size_ratio": ratio,
            "settings": record["settings"],
            "reduce_range": record["reduce_range"],
            "symmetric": record["symmetric"],
        }
        return Int8Result(record=record, ranges=ranges.to_dict(), summary=summary)

    def _improve_weights(self, prepared: Path, ranges: Any, float_nodes: list[str]) -> tuple[Path, Any, dict[str, Any]]:
        """All-int8 plainly, after bias correction, and after AdaRound (as their modes say), measured; the best is kept.

        Each candidate transforms the same float model; a candidate replaces the kept one if its mode
        is `on`, or if it meets the gates where the kept one does not, or comes closer to fp32 (logit
        SQNR on the tuning images, which tracks val in `benchmarks/results/ptq.md`). They are not
        chained: bias correction after AdaRound lowered val SQNR on all five suite sets (by 0.8-2.5 dB).
        AdaRound's default `when_needed` runs it only when the kept candidate misses the gates: on the
        suite it added 0.3-1.8 dB over bias correction for about 150 s, where bias correction alone
        already kept int8 within 0.7 points of fp32. Returns the float model to quantize, its
        measured all-int8 attempt, and one record per candidate.
        """
        settings, tuning, budget, calibration = self.settings, self.tuning, self.budget, self.calibration
        from edgetl.quantization.accuracy_aware import measure_attempt
        from edgetl.quantization.adaround import AdaRoundSettings, adaround
        from edgetl.quantization.bias_correction import correct_biases

        cfg, work = self.recipe.config, self.work
        plain_file = work / "ptq_all_int8.onnx"
        kept: tuple[Path, Any] = (
            prepared,
            (plain_file, measure_attempt(prepared, plain_file, ranges, settings, float_nodes, tuning, *budget)),
        )
        records: dict[str, Any] = {"adaround": None, "bias_correction": None}
        steps = [
            ("bias_correction", "bias correction", cfg.bias_correction, correct_biases),
            (
                "adaround",
                "AdaRound",
                cfg.adaround.mode,
                partial(adaround, options=AdaRoundSettings(cfg.adaround.iterations)),
            ),
        ]
        if all(mode == "off" for _, _, mode, _ in steps):
            return kept[0], kept[1], records
        pre = self.data.preprocessing
        batch_size, is_fixed = self.batching
        images = calibration[:_WEIGHT_STEP_IMAGES]
        batches = [pre.batch(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        batches = [b for b in batches if len(b) == batch_size or not is_fixed]
        log = lambda message: self.log(message)  # noqa: E731
        for key, label, mode, transform in steps:
            before = kept[1][1]
            if mode == "off" or (mode == "when_needed" and before.within_budget):
                continue
            candidate = work / f"prepared_{key}.onnx"
            record = transform(prepared, candidate, ranges, settings, float_nodes, batches, work, log=log)
            quantized = work / f"{key}_all_int8.onnx"
            after = measure_attempt(candidate, quantized, ranges, settings, float_nodes, tuning, *budget)
            used = mode == "on" or _closer(after, before)
            record |= {"mode": mode, "used": used, "before": asdict(before), "after": asdict(after)}
            record["why"] = (
                f"all-int8 logits {before.logit_sqnr_db or 0:.1f} dB, agreement {before.agreement:.2%} before; "
                f"{after.logit_sqnr_db or 0:.1f} dB, {after.agreement:.2%} after {label}"
                + (f"; the {label} model is quantized" if used else f"; {label} did not help: not used")
            )
            self.log(f"{label}: {record['why']}")
            records[key] = record
            if used:
                kept = (candidate, (quantized, after))
        return kept[0], kept[1], records

    def _maybe_qat(
        self, prepared: Path, ranges: Any, float_nodes: list[str], measured: Any
    ) -> tuple[Path, Any, list[str], dict[str, Any], Any]:
        """QAT when all-int8 (`measured`: its file and measurement) misses the budget, or always.

        Returns what to quantize (model, ranges, float nodes), the record, and the all-int8 file and
        measurement of the chosen model (so the fallback does not quantize and measure it again).
        """
        settings, tuning, budget = self.settings, self.tuning, self.budget
        from edgetl.onnx import tools as onnx_tools
        from edgetl.quantization.accuracy_aware import measure_attempt
        from edgetl.quantization.qdq import resolve_float_nodes

        cfg = self.recipe.config
        ptq = measured[1]
        qat_file = self.work / "qat_all_int8.onnx"
        record: dict[str, Any] = {"mode": cfg.qat.mode, "ran": False, "used": False, "ptq_all_int8": asdict(ptq)}
        if cfg.qat.mode == "when_needed" and ptq.within_budget:
            record["why"] = "post-training all-int8 met the accuracy budget on the tuning images"
            return prepared, ranges, float_nodes, record, measured
        self.log(
            f"post-training all-int8: drop {ptq.accuracy_drop_points:.2f} points, agreement {ptq.agreement:.2%}"
            + (f", logits {ptq.logit_sqnr_db:.1f} dB" if ptq.logit_sqnr_db is not None else "")
            + f"; quantization-aware training ({cfg.qat.epochs} epochs)",
        )
        qat_prepared, qat_ranges, details = self._qat()
        qat_float = resolve_float_nodes(onnx_tools.load_model(qat_prepared), cfg.keep_float, cfg.exclude_nodes)
        qat = measure_attempt(qat_prepared, qat_file, qat_ranges, settings, qat_float, tuning, *budget)
        used = _closer(qat, ptq)
        summary = (
            f"QAT all-int8: drop {qat.accuracy_drop_points:.2f} points, agreement {qat.agreement:.2%}"
            + (f", logits {qat.logit_sqnr_db:.1f} dB" if qat.logit_sqnr_db is not None else "")
            + f" (post-training: {ptq.accuracy_drop_points:.2f} points, {ptq.agreement:.2%})"
        )
        record |= details | {"ran": True, "used": used, "qat_all_int8": asdict(qat)}
        record["why"] = summary + ("; the QAT weights are quantized" if used else "; QAT did not help: not used")
        self.log(record["why"])
        if not used:
            return prepared, ranges, float_nodes, record, measured
        return qat_prepared, qat_ranges, qat_float, record, (qat_file, qat)

    def _qat(self) -> tuple[Path, Any, dict[str, Any]]:
        """Fine-tune the checkpoint with simulated int8, export it, calibrate it again (same images)."""
        calibration, settings = self.calibration, self.settings
        import time

        from edgetl.onnx import tools as onnx_tools
        from edgetl.quantization.calibration import ImageCalibrationReader, compute_ranges
        from edgetl.quantization.qat import qat_from_checkpoint
        from edgetl.quantization.qdq import prepare

        started = time.perf_counter()
        cfg = self.recipe.config
        outcome, pre, images = qat_from_checkpoint(
            self.data.checkpoint,
            self.data.train,
            calibration,
            cfg.qat,
            cfg.keep_float,
            cfg.activation_type == "int8",
            settings.reduce_range,
            self.recipe.seed,
            log=lambda message: self.log(message),
        )
        raw, qat_prepared = self.work / "qat_fp32.onnx", self.work / "qat_prepared.onnx"
        onnx_tools.save_model(self.data.export(outcome.model, pre.input_shape, "QAT model"), raw)
        prepare(raw, qat_prepared)
        batch_size, is_fixed = self.batching
        reader = ImageCalibrationReader(calibration, pre, batch_size, layout.INPUT_NAME, fixed_batch=is_fixed)
        ranges = compute_ranges(qat_prepared, reader, cfg.calibration_method, cfg.percentile)
        details = {
            "epochs": cfg.qat.epochs,
            "images": images,
            "steps": outcome.steps,
            "losses": outcome.losses,
            "quantized_layers": outcome.quantized_layers,
            "seconds": time.perf_counter() - started,
        }
        return qat_prepared, ranges, details


def _fallback_summary(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "triggered": record["triggered"],
        "within_budget": record["within_budget"],
        "added_float_nodes": record["added_float_nodes"],
        "attempts": len(record["attempts"]),
        "initial_drop_points": record["attempts"][0]["accuracy_drop_points"],
        "cost": record.get("cost"),
    }


def _closer(candidate: Any, baseline: Any) -> bool:
    """Does `candidate` (an Attempt) meet the gates where `baseline` does not, or come closer to fp32?"""
    if candidate.within_budget != baseline.within_budget:
        return bool(candidate.within_budget)
    return (candidate.logit_sqnr_db or 0.0) > (baseline.logit_sqnr_db or 0.0)


def _budget_text(max_drop: float, min_agreement: float | None, cfg: Any) -> str:
    parts = [f"drop <= {max_drop:g} points"]
    if min_agreement is not None:
        parts.append(f"agreement >= {min_agreement:g}%")
    if cfg.accuracy_aware.min_logit_sqnr_db is not None:
        parts.append(f"logits >= {cfg.accuracy_aware.min_logit_sqnr_db:g} dB")
    return ", ".join(parts)
