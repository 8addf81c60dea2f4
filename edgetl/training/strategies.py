"""Fine-tuning strategies: which backbone blocks are trained at which epoch.

The literature this follows: with little data close to the pretraining domain, use the pretrained
network as a frozen feature extractor; unfreeze later blocks (early ones hold generic edges and
textures) when there is more data or the domain differs; unfreeze gradually to avoid
catastrophic forgetting; train pretrained layers at a lower learning rate than the new head.
`scratch` (random initialisation) is the baseline that shows what transfer buys.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgetl.profile import FinetuneConfig


@dataclass(frozen=True)
class Strategy:
    name: str
    pretrained: bool
    discriminative_lr: bool  # pretrained blocks at lr * backbone_lr_ratio
    total_blocks: int
    fixed_blocks: int | None = None  # trainable blocks from the top, constant over training
    every_epochs: int = 1
    blocks_per_step: int = 0
    max_blocks: int | None = None

    def trainable_blocks(self, epoch: int) -> int:
        """How many blocks, counted from the output end, are trained in `epoch` (1-based)."""
        if self.fixed_blocks is not None:
            return min(self.fixed_blocks, self.total_blocks)
        unfrozen = self.blocks_per_step * ((epoch - 1) // self.every_epochs)
        return min(unfrozen, self.max_blocks or self.total_blocks, self.total_blocks)

    @property
    def backbone_frozen_throughout(self) -> bool:
        return self.fixed_blocks == 0

    def describe(self) -> str:
        if self.name == "gradual":
            return (
                f"gradual: head only, then {self.blocks_per_step} more block(s) every {self.every_epochs} epoch(s), "
                f"up to {min(self.max_blocks or self.total_blocks, self.total_blocks)} of {self.total_blocks}"
            )
        trained = self.trainable_blocks(1)
        return f"{self.name}: {trained} of {self.total_blocks} backbone blocks trained" + (
            "" if self.pretrained else ", random initialisation"
        )


def make_strategy(name: str, cfg: FinetuneConfig, total_blocks: int) -> Strategy:
    if name == "feature_extract":
        return Strategy(name, pretrained=True, discriminative_lr=True, total_blocks=total_blocks, fixed_blocks=0)
    if name == "partial":
        return Strategy(
            name, pretrained=True, discriminative_lr=True, total_blocks=total_blocks, fixed_blocks=cfg.unfreeze_blocks
        )
    if name == "gradual":
        return Strategy(
            name,
            pretrained=True,
            discriminative_lr=True,
            total_blocks=total_blocks,
            every_epochs=cfg.gradual.every_epochs,
            blocks_per_step=cfg.gradual.blocks_per_step,
            max_blocks=cfg.gradual.max_blocks,
        )
    if name == "full":
        return Strategy(
            name, pretrained=True, discriminative_lr=True, total_blocks=total_blocks, fixed_blocks=total_blocks
        )
    if name == "scratch":
        return Strategy(
            name, pretrained=False, discriminative_lr=False, total_blocks=total_blocks, fixed_blocks=total_blocks
        )
    raise ValueError(f"unknown strategy {name!r}")
