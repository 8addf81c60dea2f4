"""Build profiles: one YAML file describes data, model, export, quantization, target and budgets.

Validation is strict (unknown keys are rejected with a suggestion) and torch-free, so
`edgetl validate` runs anywhere. Errors name the file, the line, the dotted field and the allowed
values. Relative paths inside a profile resolve against the profile's own folder, so a build does
not depend on the directory it is started from.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgetl.backbones.registry import backbone_names, unknown_backbone_message
from edgetl.backends import ARTIFACTS, converted_runtimes, unknown_artifact_message
from edgetl.epochs import IMAGE_BUDGET, MAX_EPOCHS, MIN_EPOCHS
from edgetl.errors import ProfileError, UserInputError
from edgetl.files import sha256_text
from edgetl.targets import Target, get_target, target_names, unknown_target_message


def _listable_artifact(name: str) -> str:
    """Artefacts a profile may name: the catalogue's, except engines (measured when the package stage builds one)."""
    if name not in ARTIFACTS:
        raise ValueError(unknown_artifact_message(name))
    if ARTIFACTS[name].stage == "package":
        raise ValueError(
            f"{name} cannot be listed: TensorRT engines are measured whenever the package stage builds one"
        )
    return name


ArtifactName = Annotated[str, AfterValidator(_listable_artifact)]

IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"]

# Counts in a profile (epochs, images, iterations, batch sizes, trials) are small: a bound refuses `1e32` at
# validation instead of letting it run (or overflow) hours later.
MAX_COUNT = 1_000_000
PositiveInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class _Section(BaseModel):
    # No inf or NaN anywhere: `parity_tolerance: .inf` would switch a gate off.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataConfig(_Section):
    """Where the images are and how they are split. Calibration images come from `train` only."""

    source: Literal["folder", "hymenoptera"] = Field(
        "folder", description="'folder': an ImageFolder at `root`; 'hymenoptera': the ants/bees tutorial set"
    )
    root: Path | None = Field(None, description="dataset folder (class sub-folders, or train/ and val/)")
    train_dir: str = "train"
    val_dir: str | None = Field("val", description="set to null to always split val off train")
    val_fraction: Annotated[float, Field(gt=0.0, le=0.5)] = Field(
        0.2, description="share of each class held out as val when there is no val folder"
    )
    holdout_fraction: Annotated[float, Field(ge=0.0, le=0.5)] = Field(
        0.15, description="share of train kept aside for early stopping (val is never used for it)"
    )
    tune_holdout: Annotated[float, Field(gt=0.0, le=0.5)] | None = Field(
        None,
        description="set by `edgetl tune` in its trial profiles: score on this share of train (stratified, seeded) "
        "instead of val, which is then not used at all; the search never sees val",
    )
    tune_fold: Annotated[int, Field(ge=0)] = Field(
        0, description="with tune_holdout: which seeded draw of it (edgetl tune re-scores tied candidates on fold 1)"
    )
    extensions: list[str] = Field(default_factory=lambda: list(IMAGE_EXTENSIONS))
    skip_placeholders: bool = Field(True, description="skip 'image not available' placeholder images")
    min_image_size: PositiveInt = Field(16, description="images smaller than this (pixels, either side) are skipped")

    @model_validator(mode="after")
    def _root_for_folders(self) -> DataConfig:
        if self.source == "folder" and self.root is None:
            raise ValueError("root is required when source is 'folder'")
        return self

    @field_validator("extensions")
    @classmethod
    def _dotted_lowercase(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("at least one extension is required")
        return [("." + v.lstrip(".")).lower() for v in values]


class BackboneConfig(_Section):
    """The pretrained network to fine-tune (`edgetl backbones` lists them) and its input size."""

    name: str = "efficientnet_lite0"
    pretrained: bool = True
    weights: Path | None = Field(None, description="local weights file; default: the offline weights package")
    input_size: Annotated[int, Field(ge=32, le=1024)] | None = Field(
        None,
        description="the deployed model's input (crop) size in pixels; the resize keeps the pretrained ratio "
        "(256/224). Default: the pretrained weights' own size (224 for EfficientNet-Lite0)",
    )

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in backbone_names():
            raise ValueError(unknown_backbone_message(name))
        return name


class AugmentationConfig(_Section):
    """Random changes to training images (never to holdout, val or calibration images)."""

    enabled: bool = True
    crop_scale: tuple[Annotated[float, Field(gt=0.0, le=1.0)], Annotated[float, Field(gt=0.0, le=1.0)]] = (0.35, 1.0)
    crop_ratio: tuple[Annotated[float, Field(gt=0.0)], Annotated[float, Field(gt=0.0)]] = (3 / 4, 4 / 3)
    hflip: bool = True
    color_jitter: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.3, description="brightness, contrast and saturation jitter (no hue: colour can be the class)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> AugmentationConfig:
        if self.crop_scale[0] > self.crop_scale[1] or self.crop_ratio[0] > self.crop_ratio[1]:
            raise ValueError("crop_scale and crop_ratio must be [low, high] with low <= high")
        return self


class ProgressiveResizingConfig(_Section):
    """Early epochs on smaller crops, the last ones at full size (progressive resizing, as in fast.ai and
    FFCV; Touvron et al. 2019 show training below the test resolution costs nothing with random-resized crops).
    Applies when the backbone trains (every strategy but `feature_extract`) and augmentation is on.

    On 2 CPU cores a training step at 192 px takes 0.60x the time of one at 224, at 160 px 0.43x (measured,
    EfficientNet-Lite0, AVX2): over 25 epochs the default schedule (4 at 160, 7 at 192, 14 at 224) costs
    ~0.8x. BatchNorm statistics stay frozen (`freeze_batchnorm`), so the small crops do not shift them, and
    the last epochs run at the deployed size. Sides are multiples of 32 (the network's stride).
    """

    start_scale: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.7, description="the first epoch's crop side as a fraction of the training resolution; 1 turns it off"
    )
    full_from: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.6, description="fraction of the epochs from which training runs at the full training resolution"
    )


class EarlyStoppingConfig(_Section):
    """Stop training when the holdout stops improving; the best epoch's weights are kept."""

    patience: PositiveInt | None = Field(
        None,
        description="epochs without holdout improvement before stopping, then the best epoch is restored; null "
        "(default): train the whole cosine schedule and keep the final weights (one image of a small holdout "
        "is several points: picking epochs on it picks noise)",
    )
    monitor: Literal["holdout_loss", "holdout_accuracy"] = "holdout_loss"
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0


class GradualConfig(_Section):
    """ULMFiT-style unfreezing: head only first, then `blocks_per_step` more blocks every `every_epochs`."""

    every_epochs: PositiveInt = 2
    blocks_per_step: PositiveInt = 2
    max_blocks: PositiveInt | None = Field(None, description="stop unfreezing here; default: every block")


Strategy = Literal["auto", "feature_extract", "partial", "gradual", "full", "scratch"]


class FinetuneConfig(_Section):
    """How the backbone is trained on your images: strategy, epochs, learning rates, augmentation."""

    strategy: Strategy = Field(
        "auto",
        description=(
            "feature_extract: frozen backbone, new head; partial: also the last `unfreeze_blocks` blocks; "
            "gradual: unfreeze blocks on a schedule; full: everything; scratch: random init (a baseline); "
            "auto: train a linear probe on frozen features and a full fine-tune started from it, keep the one more "
            "accurate on the holdout"
        ),
    )
    epochs: PositiveInt | None = Field(
        None,
        description=f"default: about {IMAGE_BUDGET:,} training images seen, {MIN_EPOCHS} to {MAX_EPOCHS} epochs "
        "(see edgetl.training.auto)",
    )
    batch_size: PositiveInt = Field(16, description="16: ~1.3x more images/s than 32 on CPU for depthwise nets")
    train_resolution: PositiveInt | None = Field(
        None,
        description="training crop size; default: the deployed input size (3/4 of it is ~2.5x faster on CPU but "
        "cost 22 holdout points on DTD textures after 3 epochs)",
    )
    progressive_resizing: ProgressiveResizingConfig = ProgressiveResizingConfig()
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = Field(1e-3, description="learning rate of the new head")
    backbone_lr_ratio: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.3, description="pretrained layers learn at lr * this (discriminative learning rates)"
    )
    weight_decay: Annotated[float, Field(ge=0.0)] = 1e-4
    warmup_epochs: Annotated[float, Field(ge=0.0)] = Field(1.0, description="linear warm-up, then cosine decay")
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    head_init: Literal["auto", "imagenet", "random"] = Field(
        "auto", description="'auto': start from matching ImageNet classifier rows when every class matches"
    )
    head_dropout: Fraction = 0.2
    unfreeze_blocks: PositiveInt = Field(3, description="partial: how many blocks from the top are trained")
    gradual: GradualConfig = GradualConfig()
    freeze_batchnorm: bool = Field(True, description="keep BatchNorm statistics frozen in trained blocks")
    class_balance: Literal["none", "weighted_loss", "sampler"] = "none"
    mixed_precision: Literal["auto", "off", "fp16", "bf16"] = Field(
        "auto", description="'auto': fp16 autocast on CUDA, off on CPU"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cache_features: bool = Field(
        True, description="feature_extract without augmentation: run the backbone once, then train the head"
    )
    augmentation: AugmentationConfig = AugmentationConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    threads: PositiveInt | None = Field(None, description="torch threads; default: all cores")
    num_workers: Annotated[int, Field(ge=0)] = 0


class ExportConfig(_Section):
    """The ONNX export, checked against PyTorch on real images before anything uses it."""

    opset: Annotated[int, Field(ge=18, le=23)] = Field(18, description="the torch.export-based exporter starts at 18")
    batch_size: Literal["dynamic"] | PositiveInt = Field("dynamic", description="'dynamic' or a fixed batch")
    parity_images: PositiveInt = Field(16, description="real images compared between PyTorch and ONNX")
    parity_tolerance: Annotated[float, Field(gt=0.0)] = Field(1e-3, description="max abs logit difference")


class AccuracyAwareConfig(_Section):
    """Keep the most sensitive nodes in float when int8 loses too much accuracy on the tuning images."""

    enabled: bool = True
    max_accuracy_drop: Annotated[float, Field(ge=0.0, le=100.0)] | None = Field(
        None, description="points, on train/holdout images; default: budgets.max_accuracy_drop, else 1.0"
    )
    min_agreement: Annotated[float, Field(ge=0.0, le=100.0)] | None = Field(
        99.5,
        description="percent top-1 agreement with fp32 on tuning images, failed only when significantly below "
        "(one-sided 95 % Wilson bound: on 300 images 3 disagreements pass, 5 fail); catches drops that accuracy "
        "on (well-fitted) train images hides; null: budgets.min_agreement",
    )
    min_logit_sqnr_db: Annotated[float, Field(ge=0.0, le=100.0)] | None = Field(
        20.0,
        description="int8 logits must stay this close to fp32 (dB, per-image mean removed); measured on train "
        "images it tracks val, where accuracy on train images does not; null disables",
    )
    tuning_images: PositiveInt = Field(300, description="from train (+ holdout), never from val")
    max_float_nodes: PositiveInt = Field(16, description="give up (exit 3) past this many float nodes")
    keep_speedup: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        0.8,
        description="price limit: a fallback model's speed-up over fp32 must be at least this times the all-int8 "
        "model's (0.8 x 2.0x = 1.6x), and never below 1x (ONNX Runtime, batch 1, benchmark.threads, measured "
        "interleaved; CPU targets only); null: no limit",
    )
    max_size_ratio: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        0.35, description="price limit: a fallback model's file is at most this share of the fp32 file; null: no limit"
    )
    sensitivity_images: PositiveInt = Field(16, description="images for the per-node sensitivity pass")


class QatConfig(_Section):
    """Quantization-aware training: the step after all-int8 misses the accuracy budget, before any float fallback."""

    mode: Literal["when_needed", "always", "off"] = Field(
        "off",
        description="when_needed: only if post-training all-int8 misses the accuracy budget on the tuning images; "
        "the QAT model is kept only if its all-int8 measures closer to fp32. Off by default: on DTD textures "
        "it measured worse than post-training int8 (val agreement 93.3 % vs 96.2 %; benchmarks/ptq.py --qat)",
    )
    epochs: PositiveInt = 2
    lr: Annotated[float, Field(gt=0.0, le=1.0)] = 3e-5
    images: PositiveInt = Field(400, description="training images QAT fine-tunes on (train split, never val)")
    batch_size: PositiveInt = 16
    distillation: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        1.0,
        description="weight of the KL loss to the fp32 model's logits; the rest is cross-entropy on labels. 1.0: "
        "the gates measure fidelity to fp32, and a label loss moves the model away from it",
    )


class AdaRoundConfig(_Section):
    """Learned rounding (AdaRound): each conv weight rounds up or down so the int8 conv reproduces its fp32 output."""

    mode: Literal["when_needed", "auto", "on", "off"] = Field(
        "when_needed",
        description="when_needed: only if all-int8 (after bias correction) misses the accuracy budget, before any "
        "float fallback; auto: always try it; either keeps it only if its all-int8 comes closer to fp32 on the "
        "tuning images. On the suite it added 0.3-1.8 dB logit SQNR over bias correction for ~150 s "
        "(EfficientNet-Lite0, 2 cores; benchmarks/results/ptq.md)",
    )
    iterations: PositiveInt = Field(300, description="optimisation steps per conv (64 calibration images)")


class Int8Config(_Section):
    """Post-training int8 quantization: calibration, what stays float, and the accuracy checks around it."""

    enabled: bool = True
    calibration_images: PositiveInt = Field(
        300, description="taken from train (+ holdout), never from val; all of them if train is smaller"
    )
    calibration_method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="entropy: KL search over a 2048-bin histogram; percentile: clip at `percentile`"
    )
    percentile: Annotated[float, Field(gt=90.0, le=100.0)] = Field(
        99.999, description="for calibration_method percentile"
    )
    activation_type: Literal["uint8", "int8"] = "uint8"
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    reduce_range: bool | Literal["auto"] = Field(
        "auto",
        description="7-bit weights: avoids int16 saturation of u8s8 kernels on x86 CPUs without VNNI; auto: on "
        "for x86-cpu builds on such CPUs, off elsewhere (VNNI, ARM, TensorRT)",
    )
    keep_float: list[Literal["first_conv", "classifier"]] = Field(
        default_factory=lambda: ["first_conv"],
        description="layers kept in float; the 3-channel stem conv is both faster and more accurate in fp32",
    )
    exclude_nodes: list[str] = Field(default_factory=list, description="more ONNX node names kept in float")
    adaround: AdaRoundConfig = AdaRoundConfig()
    bias_correction: Literal["auto", "on", "off"] = Field(
        "auto",
        description="fold int8's per-channel mean shift of every quantized conv into its bias, conv by conv "
        "(64 calibration images); auto: keep it when its all-int8 model comes closer to fp32 on the tuning "
        "images (logit SQNR) than the plain one",
    )
    qat: QatConfig = QatConfig()
    accuracy_aware: AccuracyAwareConfig = AccuracyAwareConfig()


class Fp16Config(_Section):
    """A half-precision ONNX model (for GPUs; CPUs usually run it slower than fp32)."""

    enabled: bool = Field(False, description="also write models/model_fp16.onnx (for GPU targets)")


class OptimizeConfig(_Section):
    """The optimized ONNX artefacts made from the fp32 export."""

    int8: Int8Config = Int8Config()
    fp16: Fp16Config = Fp16Config()


class TensorRTConfig(_Section):
    """Engine build settings for TensorRT targets; unset values come from the target (edgetl targets)."""

    workspace_mb: PositiveInt | None = Field(None, description="builder workspace limit; default: the target's")
    min_batch: PositiveInt = 1
    opt_batch: PositiveInt = Field(1, description="the batch size TensorRT tunes kernels for")
    max_batch: PositiveInt | None = Field(None, description="default: the target's; needs export.batch_size dynamic")
    dla_core: Annotated[int, Field(ge=0)] | None = Field(None, description="run on this DLA core (Orin NX/AGX)")
    gpu_fallback: bool = Field(True, description="with dla_core: layers the DLA cannot run go to the GPU")
    hardware_compatibility: Literal["none", "ampere_plus", "same_compute_capability"] = Field(
        "none", description="ampere_plus: one engine for every Ampere-or-newer GPU (slower)"
    )
    version_compatible: bool = Field(False, description="engine loadable by later TensorRT releases (lean runtime)")
    builder_optimization_level: Annotated[int, Field(ge=0, le=5)] | None = None
    timing_cache: bool = Field(True, description="persist the tactic timing cache next to the engine")
    strongly_typed: bool | None = Field(
        None,
        description="precision from the model's types (Q/DQ int8, the fp16 ONNX), no --fp16/--int8 flags; default: "
        "on from TensorRT 10.12 (which deprecates the flags; 11 has only this mode)",
    )
    verify_images: PositiveInt = Field(
        32, description="val images stored in the bundle with ONNX Runtime reference logits to verify the engine"
    )
    verify_min_agreement: Annotated[float, Field(ge=0.0, le=100.0)] = Field(
        99.0, description="percent top-1 agreement of the engine with the reference, else the engine is refused"
    )

    @model_validator(mode="after")
    def _batches_ordered(self) -> TensorRTConfig:
        top = self.max_batch if self.max_batch is not None else max(self.min_batch, self.opt_batch)
        if not self.min_batch <= self.opt_batch <= top:
            raise ValueError(f"need min_batch <= opt_batch <= max_batch, got {self.min_batch}, {self.opt_batch}, {top}")
        return self


class ConvertConfig(_Section):
    """Other runtimes' artefacts, converted from the same validated ONNX models and measured next to them."""

    runtimes: list[str] | None = Field(
        None, description="e.g. [openvino]; default: the target's (intel-cpu: openvino; x86-cpu: none)"
    )

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, names: list[str] | None) -> list[str] | None:
        if names is None:
            return None
        known = converted_runtimes()
        for name in names:
            if name not in known:
                raise ValueError(f"runtime {name!r} cannot be converted to; choose from {', '.join(known)}")
        if len(set(names)) != len(names):
            raise ValueError("runtimes must not repeat")
        return names


class PackageConfig(_Section):
    """What the device bundle ships besides the deployed model."""

    pixels_model: Literal["any_size", "crop_size", "off"] = Field(
        "any_size",
        description="model_pixels.onnx: the deployed ONNX with preprocessing as ONNX ops, taking decoded uint8 "
        "RGB pixels (any_size: of any size; crop_size: already resized and cropped). ONNX bundles only",
    )


class BenchmarkConfig(_Section):
    """How every artefact is measured on the val images: accuracy, latency, throughput, memory."""

    artifacts: list[ArtifactName] | None = Field(None, description="default: every artefact the profile produces")
    baseline: ArtifactName = "torch_fp32"
    deploy: Literal["target", "fastest"] | None = Field(
        None,
        description="target: ship the target's artefact; fastest: the fastest measured artefact that passes the "
        "accuracy budgets and the runtime-agreement check; default: the target's choice (intel-cpu: fastest)",
    )
    min_runtime_agreement: Annotated[float, Field(ge=0.0, le=100.0)] = Field(
        99.0,
        description="percent top-1 agreement on val a converted artefact needs with the model it was converted "
        "from before `deploy: fastest` may ship it (same model, other runtime: it must predict the same); the "
        "web target's page must agree with `edgetl predict` as often, or the build fails",
    )
    threads: PositiveInt = 1
    warmup: Annotated[int, Field(ge=0)] = 10
    iterations: PositiveInt = 100
    rounds: PositiveInt = Field(5, description="latency runs are interleaved across artefacts in rounds")
    throughput_batch_size: PositiveInt = 32
    throughput_iterations: PositiveInt = 5
    batch_sizes: list[PositiveInt] = Field(
        default_factory=lambda: [1, 8, 32], description="batch-size sweep: latency and throughput at each"
    )
    memory: bool = Field(True, description="peak memory of each artefact, measured in a fresh process")
    compute_peak: bool = Field(True, description="measure ONNX Runtime's GEMM peak to report utilization")
    eval_batch_size: PositiveInt = 32

    @model_validator(mode="after")
    def _baseline_measured(self) -> BenchmarkConfig:
        if self.artifacts is None:
            return self
        if self.baseline not in self.artifacts:
            raise ValueError(f"baseline {self.baseline!r} must be one of the benchmarked artifacts {self.artifacts}")
        if len(set(self.artifacts)) != len(self.artifacts):
            raise ValueError("artifacts must not repeat")
        return self


class BudgetsConfig(_Section):
    """Limits that fail the build (exit code 3) after the report is written."""

    artifact: ArtifactName | None = Field(None, description="artefact checked; default: the target's deployed one")
    max_accuracy_drop: Annotated[float, Field(ge=0.0, le=100.0)] | None = Field(
        None, description="percentage points below the baseline"
    )
    min_accuracy: Annotated[float, Field(ge=0.0, le=100.0)] | None = Field(None, description="percent")
    min_agreement: Annotated[float, Field(ge=0.0, le=100.0)] | None = Field(
        None, description="percent of eval images with the same top-1 as the baseline"
    )
    max_latency_ms: Annotated[float, Field(gt=0.0)] | None = None
    latency_percentile: Literal["p50", "p90", "p99"] = "p90"
    max_size_mb: Annotated[float, Field(gt=0.0)] | None = None
    min_speedup: Annotated[float, Field(gt=0.0)] | None = Field(
        None, description="the checked artefact's p50 speed-up over the fp32 ONNX model, measured in the same run"
    )
    max_size_ratio: Annotated[float, Field(gt=0.0)] | None = Field(
        None, description="the checked artefact's file size as a share of the fp32 ONNX model's"
    )


SearchValue = str | int | float | bool | None


class SearchRange(_Section):
    """A numeric range to search: floats unless `low`, `high` (and `step`) are integers."""

    low: float
    high: float
    log: bool = Field(False, description="sample on a log scale (learning rates)")
    step: float | None = Field(None, description="quantize to multiples of this from low (e.g. 32 for input sizes)")

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self

    @property
    def integer(self) -> bool:
        """Integer bounds (and step) give integer samples; a log range of integers too, from 1 up."""
        values = [self.low, self.high] + ([self.step] if self.step is not None else [])
        return all(float(v).is_integer() for v in values) and (not self.log or self.low >= 1)


TuneObjective = Literal["accuracy", "latency", "size"]


class TuneConfig(_Section):
    """`edgetl tune`: what varies, what is optimised, and how long to search (the rest of the profile is fixed)."""

    search: dict[str, list[SearchValue] | SearchRange] = Field(
        default_factory=dict,
        description="parameter -> a list of choices or a {low, high, log, step} range. Parameters: backbone, "
        "input_size, strategy, unfreeze_blocks, lr, backbone_lr_ratio, augmentation (none, light, default, strong), "
        "epochs, calibration_method, or any dotted profile field (finetune.label_smoothing). Empty: edgetl's "
        "default space (edgetl.tuning.space.default_space, printed when the search starts)",
    )
    objectives: list[TuneObjective] = Field(
        default_factory=lambda: ["accuracy", "latency"],
        description="accuracy (maximised, on the tune holdout), latency (p50 of the deployed artefact, minimised), "
        "size (its file, minimised); the profile's budgets are constraints",
    )
    holdout_fraction: Annotated[float, Field(gt=0.0, le=0.5)] = Field(
        0.2, description="share of each train class that trials are scored on; val is never seen by the search"
    )
    trials: PositiveInt = Field(20, description="total trials of the study (all workers together)")
    time_budget: str | None = Field(
        None, description="stop starting trials after this long, e.g. 30m, 2h, 900s (this worker's wall clock)"
    )
    sampler: Literal["auto", "tpe", "nsga2", "random"] = Field(
        "auto", description="auto: multi-objective TPE (good with few trials)"
    )
    pruning: bool = Field(
        True,
        description="stop a trial at a rung epoch (2, 4, 8, ...) when most trials at least as cheap (MACs) were "
        "more accurate on the holdout at that epoch",
    )
    startup_trials: PositiveInt = Field(
        4, description="trials sampled at random (the first takes the profile's own values) before the sampler models"
    )
    final_build: bool = Field(True, description="build the pick on the full train split and evaluate it on val")
    confirm: Annotated[int, Field(ge=0)] = Field(
        6,
        description="when several trials tie for the best holdout accuracy (within one image), rebuild up to this "
        "many of them on a second holdout fold and pick on both folds together; 0: off",
    )

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, values: list[str]) -> list[str]:
        if "accuracy" not in values:
            raise ValueError("objectives must include accuracy")
        if len(set(values)) != len(values):
            raise ValueError("objectives must not repeat")
        return values

    @field_validator("time_budget")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


def parse_duration(text: str) -> float:
    """Seconds in `30m`, `2h`, `90s`, `1h30m` or a bare number of seconds; ValueError otherwise."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or match is None or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration (e.g. 30m, 2h, 1h30m, 900s)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return total


class MlflowConfig(_Section):
    """Log to an MLflow tracking server or folder."""

    enabled: bool = True
    tracking_uri: str | None = Field(
        None, description="default: a SQLite store in the run directory (mlflow.db); a server URL to share"
    )
    experiment: str | None = Field(None, description="default: the profile's name")


class TensorBoardConfig(_Section):
    """Write TensorBoard event files."""

    enabled: bool = True
    log_dir: Path | None = Field(None, description="default: <run>/tensorboard")


class TrackingConfig(_Section):
    """Log each build and each tuning trial (params, metrics, report, artefacts) where teams already look."""

    mlflow: MlflowConfig | None = None
    tensorboard: TensorBoardConfig | None = None
    log_models: bool = Field(True, description="attach the deployed model and bundle to each MLflow run")


class OnDeviceConfig(_Section):
    """Measure the finished bundle on the device itself, over SSH, as the build's last step."""

    ssh: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\s-][^\s]*$")] = Field(
        description="user@host (or a host from ~/.ssh/config) that runs `edgetl bench BUNDLE` for the report"
    )
    edgetl: Annotated[str, Field(min_length=1, max_length=1000)] = Field(
        "edgetl", description="the command that runs edgetl on the device, e.g. '~/venv/bin/python -m edgetl'"
    )
    ssh_options: list[Annotated[str, Field(pattern=r"^[A-Za-z]+=.+$", max_length=1000)]] = Field(
        default_factory=list, description="ssh/scp -o options (Port=2222, IdentityFile=...); keys, never passwords"
    )


class WebConfig(_Section):
    """The web target: where onnxruntime-web comes from, and the browser that checks and times the page."""

    onnxruntime_web: Path | None = Field(
        None,
        description="onnxruntime-web's npm package folder (or its dist/) to ship in the bundle; default: "
        "$EDGETL_ONNXRUNTIME_WEB, edgetl's cache, or the pinned release downloaded from the npm registry",
    )
    chromium: Annotated[str, Field(min_length=1, max_length=1000)] = Field(
        "auto",
        description="the browser that runs the bundle's page on the build machine: 'auto' (chromium or chrome on "
        "PATH, or $EDGETL_CHROMIUM; skipped with a warning when there is none), a path or command, or 'off'",
    )
    threads: list[Annotated[int, Field(ge=1, le=64)]] = Field(
        default_factory=list,
        max_length=4,
        description="WASM thread counts to time the page with; default: 1 and every core of the build machine",
    )


class Profile(_Section):
    """A build profile: what to train on, which backbone, how to optimize, for which target, within which budgets.

    The same fields as a profile YAML file; build one in code with `edgetl.Profile(name=..., data={...})`
    (sections as dicts or config objects) and hand it to `edgetl.build`. Immutable: `model_copy(update=...)`.
    """

    version: Literal[1] = Field(1, description="the profile format's version")
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)] = Field(
        description="names the run directory (./runs/<name> by default), the report and the bundle"
    )
    description: str = Field("", description="free text, shown in the report")
    seed: Annotated[int, Field(ge=-(2**63), lt=2**63)] = Field(0, description="a 64-bit integer (torch's seed range)")
    output_dir: Path | None = Field(None, description="default: ./runs/<name>")
    data: DataConfig
    backbone: BackboneConfig = BackboneConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    export: ExportConfig = ExportConfig()
    optimize: OptimizeConfig = OptimizeConfig()
    convert: ConvertConfig = ConvertConfig()
    target: str = Field(
        "x86-cpu", description="where the model runs: the runtime, precision and bundle (`edgetl targets`)"
    )
    tensorrt: TensorRTConfig = TensorRTConfig()
    package: PackageConfig = PackageConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    budgets: BudgetsConfig = BudgetsConfig()
    tune: TuneConfig | None = Field(None, description="`edgetl tune` only: the search")
    tracking: TrackingConfig = TrackingConfig()
    web: WebConfig = WebConfig()
    on_device: OnDeviceConfig | None = Field(
        None, description="measure the bundle on the device over SSH after the build (`edgetl bench --on` inside build)"
    )

    @field_validator("target")
    @classmethod
    def _known_target(cls, name: str) -> str:
        if name not in target_names():
            raise ValueError(unknown_target_message(name))
        return name

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        int8 = self.optimize.int8.enabled
        listed = self.benchmark.artifacts or []
        if "onnx_int8" in listed and not int8:
            raise ValueError("benchmark.artifacts lists onnx_int8 but optimize.int8.enabled is false")
        if "onnx_fp16" in listed and not self.optimize.fp16.enabled:
            raise ValueError("benchmark.artifacts lists onnx_fp16 but optimize.fp16.enabled is false")
        from edgetl.plan import build_plan

        plan = build_plan(self)
        produced = plan.produced_artifacts
        for name in listed:
            if name not in produced:
                item = ARTIFACTS[name]
                needs = [] if item.backend in plan.convert_runtimes else [f"{item.backend} in convert.runtimes"]
                if item.source and item.source not in produced:
                    needs.append(f"{item.source} (its source)")
                raise ValueError(f"benchmark.artifacts lists {name}, which needs {' and '.join(needs)}")
        target = get_target(self.target)
        if int8 and not target.supports_int8:
            raise ValueError(
                f"target {target.name} supports {', '.join(target.precisions)} only; set optimize.int8.enabled: false"
            )
        int8_cfg = self.optimize.int8
        if int8 and target.uses_tensorrt and (int8_cfg.activation_type, int8_cfg.weight_type) != ("int8", "int8"):
            raise ValueError(
                f"target {target.name}: TensorRT runs symmetric signed int8 only; set optimize.int8.activation_type "
                "and weight_type to int8"
            )
        if target.browser and self.package.pixels_model != "any_size":
            raise ValueError(
                f"target {target.name} runs model_pixels.onnx in the browser: set package.pixels_model: any_size"
            )
        if self.web != WebConfig() and not target.browser:
            raise ValueError(f"the web section applies to the web target; target {target.name} uses {target.runtime}")
        if self.tensorrt != TensorRTConfig() and not target.uses_tensorrt:
            raise ValueError(
                f"the tensorrt section applies to TensorRT targets; target {target.name} uses {target.runtime}"
            )
        if target.engine is not None:
            if self.tensorrt.dla_core is not None and self.tensorrt.dla_core >= target.engine.dla_cores:
                raise ValueError(
                    f"tensorrt.dla_core {self.tensorrt.dla_core}: target {target.name} has "
                    f"{target.engine.dla_cores} DLA core(s)"
                )
            self._check_tensorrt_release(target)
            max_batch = self.tensorrt.max_batch or target.engine.max_batch
            fixed = self.export.batch_size
            if fixed != "dynamic" and not self.tensorrt.min_batch <= fixed <= max_batch:
                raise ValueError(f"export.batch_size {fixed} is outside tensorrt min_batch..max_batch")
        deployed = self.budgets.artifact or target.deployed_artifact(int8)
        if self.budgets.artifact is None and deployed not in produced:
            raise ValueError(
                f"target {target.name} ships {deployed}, which this profile does not produce (convert.runtimes: "
                f"{', '.join(plan.convert_runtimes) or 'none'}); add {ARTIFACTS[deployed].backend} to "
                f"convert.runtimes, or name the artefact to ship in budgets.artifact (one of {', '.join(produced)})"
            )
        if deployed not in plan.benchmarked_artifacts:
            raise ValueError(f"budgets apply to {deployed!r}, which benchmark.artifacts does not measure")
        relative = [n for n in ("min_speedup", "max_size_ratio") if getattr(self.budgets, n) is not None]
        if relative and "onnx_fp32" not in plan.benchmarked_artifacts:
            raise ValueError(
                f"budgets.{relative[0]} is relative to onnx_fp32, which benchmark.artifacts does not measure"
            )
        return self

    def _check_tensorrt_release(self, target: Target) -> None:
        """What the target's TensorRT release cannot build or parse, refused here rather than on the device."""
        from edgetl.backends.tensorrt.options import EngineOptions

        release = target.tensorrt_release()
        assert release is not None
        options = EngineOptions(
            precision=target.engine_precision(self.optimize.int8.enabled) or "fp16",
            hardware_compatibility=self.tensorrt.hardware_compatibility,
            version_compatible=self.tensorrt.version_compatible,
            builder_optimization_level=self.tensorrt.builder_optimization_level,
            strongly_typed=self.tensorrt.strongly_typed,
        )
        try:
            options.check_release(release, f"target {target.name}")
        except UserInputError as error:
            raise ValueError(str(error)) from None
        from edgetl.plan import build_plan

        if build_plan(self).strongly_typed_fp16_engine and not self.optimize.fp16.enabled:
            raise ValueError(
                f"target {target.name} builds strongly typed fp16 engines (TensorRT {release}) from the fp16 ONNX: "
                "set optimize.fp16.enabled: true (or tensorrt.strongly_typed: false before TensorRT 11)"
            )
        if release.max_opset < self.export.opset and self.export.opset != 18:
            raise ValueError(
                f"export.opset {self.export.opset}: target {target.name}'s TensorRT {release} parser reads opset "
                f"<= {release.max_opset}, and edgetl lowers from opset 18 only: set export.opset: 18"
            )


PROFILE_SCHEMA_FILE = "profile.schema.json"  # in profiles/: what each profile's yaml-language-server line names


def profile_json_schema() -> dict[str, Any]:
    """The profile as JSON Schema (2020-12), for editors: completion, hover help and checks while typing.

    Generated from the pydantic model, with the names only validators know (targets, backbones) as enums.
    Editors check less than `edgetl validate` does (cross-field rules live in the model); it is the reference.
    """
    schema = Profile.model_json_schema()
    schema["properties"]["target"]["enum"] = target_names()
    schema["$defs"]["BackboneConfig"]["properties"]["name"]["enum"] = backbone_names()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "edgetl profile",
        "description": "An edgetl build profile (edgetl build PROFILE). Check one with: edgetl validate PROFILE",
        **{key: value for key, value in schema.items() if key not in ("title", "description")},
    }


@dataclass(frozen=True)
class LoadedProfile:
    """A validated profile plus where it came from; paths inside are already absolute."""

    profile: Profile
    path: Path
    sha256: str
    text: str

    @property
    def output_dir(self) -> Path:
        return self.profile.output_dir or (Path.cwd() / "runs" / self.profile.name).resolve()


# -- loading -----------------------------------------------------------------------------------


# A profile is a page of settings: these bounds refuse alias bombs and runaway files before anything expands them.
MAX_PROFILE_BYTES = 1 << 20
MAX_YAML_ALIASES = 100


class _StrictLoader(yaml.SafeLoader):
    """Safe loader that rejects duplicate keys instead of silently keeping the last one, and alias bombs."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_YAML_ALIASES} aliases (*name): refused (alias bomb?)", mark
                )
        return super().compose_node(parent, index)


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_map(text: str) -> dict[tuple[Any, ...], int]:
    """Map each key path in the YAML document to its 1-based line number."""
    lines: dict[tuple[Any, ...], int] = {}

    seen: set[int] = set()

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        if id(node) in seen:  # an aliased node: mapped where it was anchored, never expanded again
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key_path = (*path, key_node.value)
                lines[key_path] = key_node.start_mark.line + 1
                walk(value_node, key_path)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*path, index)] = item.start_mark.line + 1
                walk(item, (*path, index))

    try:
        root = yaml.compose(text, Loader=_StrictLoader)
        if root is not None:
            walk(root, ())
    except (yaml.YAMLError, RecursionError):
        return lines
    return lines


def _model_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic section class that owns `path` (for listing allowed keys)."""
    model: type[BaseModel] = Profile
    for part in path:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return None
    return model


def _describe_error(error: dict[str, Any], lines: dict[tuple[Any, ...], int], file: Path) -> str:
    loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and "[" in part))
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    line = None
    for cut in range(len(loc), -1, -1):
        line = lines.get(loc[:cut])
        if line:
            break
    where = f"{file}:{line}" if line else str(file)
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{where}: {dotted}: unknown key{hint} allowed keys: {', '.join(allowed)}"
    if kind == "missing":
        return f"{where}: {dotted}: required field is missing"
    message = error["msg"]
    message = re.sub(r"^(Value error|Assertion failed), ", "", message)
    given = error.get("input")
    shown = "" if isinstance(given, dict | list) or given is None else f" (got {given!r})"
    return f"{where}: {dotted}: {message}{shown}"


def parse_profile(text: str, file: Path, line_numbers: bool = True) -> Profile:
    """Parse and validate profile text; `file` is used for messages and relative paths.

    `line_numbers=False` for generated text: a line the user never saw would mislead.
    """
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader derives from SafeLoader
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark and line_numbers else str(file)
        raise ProfileError(f"{where}: invalid YAML: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise ProfileError(f"{file}: invalid YAML: {error}") from None
    except RecursionError:
        raise ProfileError(f"{file}: invalid YAML: nested too deeply for a profile") from None
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else type(raw).__name__  # not "NoneType"
        raise ProfileError(f"{file}: a profile must be a YAML mapping (key: value), got {got}")
    try:
        profile = Profile.model_validate(raw)
    except RecursionError:
        raise ProfileError(f"{file}: nested too deeply for a profile") from None
    except ValidationError as error:
        lines = _line_map(text) if line_numbers else {}
        problems = [_describe_error(e, lines, file) for e in error.errors()]
        raise ProfileError("\n".join(problems)) from None
    return _resolve_paths(profile, file.parent)


# Every path field of a profile: resolved against the profile file's folder when loaded, written resolved
# when edgetl records a profile it generated.
PATH_FIELDS = ("output_dir", "data.root", "backbone.weights", "tracking.tensorboard.log_dir")


def path_field(profile: Profile, dotted: str) -> Path | None:
    """The value of a dotted path field (None where it, or the section holding it, is unset)."""
    value: Any = profile
    for name in dotted.split("."):
        value = getattr(value, name, None) if value is not None else None
    return value


def _with_field(model: BaseModel, dotted: str, value: Any) -> Any:
    name, _, rest = dotted.partition(".")
    if not rest:
        return model.model_copy(update={name: value})
    return model.model_copy(update={name: _with_field(getattr(model, name), rest, value)})


def _resolve_paths(profile: Profile, base: Path) -> Profile:
    for dotted in PATH_FIELDS:
        path = path_field(profile, dotted)
        if path is not None:
            path = path.expanduser()
            profile = _with_field(profile, dotted, (path if path.is_absolute() else base / path).resolve())
    return profile


def load_profile(path: str | Path) -> LoadedProfile:
    file = Path(path)
    if not file.exists():
        raise ProfileError(f"{file}: profile not found")
    if file.is_dir():
        raise ProfileError(f"{file}: is a directory, expected a profile .yaml file")
    if not file.is_file():  # a FIFO would block forever, a device never end
        raise ProfileError(f"{file}: not a regular file, expected a profile .yaml file")
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_PROFILE_BYTES + 1)
        if len(data) > MAX_PROFILE_BYTES:
            raise ProfileError(f"{file}: larger than {MAX_PROFILE_BYTES // 1024} KiB; a profile is a page of settings")
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it
    except UnicodeDecodeError:
        raise ProfileError(f"{file}: not a text file (expected UTF-8 YAML)") from None
    except OSError as error:
        raise ProfileError(f"{file}: cannot read profile ({error.strerror})") from None
    return loaded_from_text(text, file.resolve())


def loaded_from_text(text: str, source: Path) -> LoadedProfile:
    """Profile text validated as if read from `source` (relative paths resolve against its folder)."""
    return LoadedProfile(profile=parse_profile(text, source), path=source, sha256=sha256_text(text), text=text)


def loaded_from_mapping(data: Mapping[str, Any], source: Path, header: str = "") -> LoadedProfile:
    """A profile given as a mapping (Python, or a file with overrides laid over it), as if read from `source`.

    Relative paths resolve against `source`'s folder; messages name `source` and the field (no line:
    the YAML is generated). The recorded text is the mapping as YAML with every path written resolved,
    so the run directory's profile.yaml rebuilds the same thing from wherever it is built.
    """
    plain = plain_profile_data(data)
    try:
        text = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError as error:
        raise ProfileError(f"{source}: a value YAML cannot hold ({error})") from None
    profile = parse_profile(text, source, line_numbers=False)
    for dotted in PATH_FIELDS:
        value = path_field(profile, dotted)
        section = plain
        *parents, last = dotted.split(".")
        for name in parents:
            section = section.get(name) if isinstance(section, dict) else None
        if isinstance(section, dict) and section.get(last) is not None:
            section[last] = str(value)
    return loaded_from_text(header + yaml.safe_dump(plain, sort_keys=False, allow_unicode=True), source)


def plain_profile_data(value: Any) -> Any:
    """What YAML's safe dumper writes: config objects as their fields, paths as strings, numpy scalars as numbers."""
    if isinstance(value, BaseModel):
        return plain_profile_data(value.model_dump(mode="json", exclude_unset=True))
    if isinstance(value, Mapping):
        return {str(key): plain_profile_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_profile_data(item) for item in value]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "item") and hasattr(value, "dtype"):  # a numpy scalar
        return value.item()
    return value


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Profile mapping `base` with `overrides` laid over it, section by section (for scripted variants)."""
    merged = dict(base)
    for key, value in overrides.items():
        nested = isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
        merged[key] = deep_merge(merged[key], value) if nested else value
    return merged


def profile_section(profile: Profile, name: str) -> dict[str, Any]:
    """JSON-ready dump of one section, used in stage fingerprints."""
    return getattr(profile, name).model_dump(mode="json")
