from __future__ import annotations

import torch

from edgetl.backbones import get_backbone
from edgetl.profile import AugmentationConfig
from edgetl.training.datasets import ImageListDataset, train_transform
from edgetl.training.sampling import GlobalBatchSampler, sample_seed
from tests.helpers import make_image_folder


def test_ranks_split_every_global_batch_of_the_single_process_run() -> None:
    single = GlobalBatchSampler(size=21, batch_size=8, seed=3)
    ranks = [GlobalBatchSampler(size=21, batch_size=8, seed=3, rank=r, world_size=3) for r in range(3)]
    for epoch in (1, 2):
        for sampler in [single, *ranks]:
            sampler.set_epoch(epoch)
        expected = list(single)
        per_rank = [list(sampler) for sampler in ranks]
        assert all(len(batches) == len(expected) for batches in per_rank), "every rank takes every step"
        for step, batch in enumerate(expected):
            assert [key for batches in per_rank for key in batches[step]] == batch
            assert all(batches[step] for batches in per_rank), "no rank gets an empty slice"
    single.set_epoch(1)
    first = list(single)
    single.set_epoch(2)
    assert list(single) != first, "each epoch has its own order"
    assert len(single) == 3 and sorted(i for batch in first for i, _ in batch) == list(range(21))


def test_a_last_batch_smaller_than_the_process_count_is_dropped() -> None:
    sampler = GlobalBatchSampler(size=9, batch_size=4, seed=0, rank=0, world_size=2)
    assert len(list(sampler)) == len(sampler) == 2


def test_balanced_sampling_draws_the_rare_class_more() -> None:
    labels = [0] * 90 + [1] * 10
    weights = [1 / 90 if y == 0 else 1 / 10 for y in labels]
    sampler = GlobalBatchSampler(size=100, batch_size=10, seed=0, weights=weights)
    drawn = [labels[i] for batch in sampler for i, _ in batch]
    assert 30 <= sum(drawn) <= 70


def test_augmentation_depends_on_sample_and_epoch_not_on_call_order(tmp_path) -> None:
    root = make_image_folder(tmp_path, {"reds": 3})
    paths = sorted(root.rglob("*.jpg"))
    pre = get_backbone("efficientnet_lite0").pretrained.preprocessing
    dataset = ImageListDataset(paths, [0, 0, 0], train_transform(pre, AugmentationConfig()), preload_side=256, seed=5)
    first = dataset[(1, 1)][0]
    torch.rand(100)  # disturb the global random stream
    dataset[(2, 1)]
    assert torch.equal(dataset[(1, 1)][0], first)
    assert not torch.equal(dataset[(1, 2)][0], first), "another epoch, another augmentation"
    assert dataset[(1, 1)][2] == sample_seed(5, 1, 1)
