from __future__ import annotations

import math

import numpy as np
import pytest

from edgetl import stats
from edgetl.stats import (
    agreement,
    bootstrap_accuracy_ci,
    compare_to_baseline,
    confusion_matrix,
    mcnemar_exact,
    paired_bootstrap_difference,
    per_class_accuracy,
)


def _discordant(a_only: int, b_only: int, both: int = 0, neither: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correctness vectors with the given McNemar cell counts."""
    a = np.array([True] * a_only + [False] * b_only + [True] * both + [False] * neither)
    b = np.array([False] * a_only + [True] * b_only + [True] * both + [False] * neither)
    return a, b


# --- McNemar ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a_only", "b_only", "expected"),
    [
        (0, 1, 1.0),
        (1, 0, 1.0),
        (0, 6, 0.03125),  # 2 * 1 / 2**6
        (6, 0, 0.03125),
        (2, 10, 2 * 79 / 4096),  # 2 * (1 + 12 + 66) / 2**12
        (5, 5, 1.0),
    ],
)
def test_mcnemar_known_p_values(a_only: int, b_only: int, expected: float) -> None:
    a, b = _discordant(a_only, b_only, both=7, neither=3)
    result = mcnemar_exact(a, b)
    assert result["p_value"] == pytest.approx(expected, rel=1e-12)
    assert result["a_only_correct"] == a_only
    assert result["b_only_correct"] == b_only
    assert result["discordant"] == a_only + b_only
    assert result["test"] == "exact McNemar (binomial, two-sided)"


def test_mcnemar_2_vs_10_is_about_0_0386() -> None:
    result = mcnemar_exact(*_discordant(2, 10))
    assert result["p_value"] == pytest.approx(0.03857, abs=1e-5)
    assert result["interpretation"].startswith("significant difference at 5% (p=0.039)")


def test_mcnemar_no_discordant_pairs() -> None:
    a, b = _discordant(0, 0, both=5, neither=2)
    result = mcnemar_exact(a, b)
    assert result["p_value"] == 1.0
    assert result["discordant"] == 0
    assert "no discordant images" in result["interpretation"]


def test_mcnemar_interpretation_not_significant() -> None:
    result = mcnemar_exact(*_discordant(0, 1, both=100))
    assert result["interpretation"].startswith("no evidence of a difference (p=1.00)")
    assert "0 vs 1 discordant images" in result["interpretation"]


def test_mcnemar_large_n_is_finite() -> None:
    result = mcnemar_exact(*_discordant(40_000, 40_500))
    p = result["p_value"]
    assert math.isfinite(p)
    assert 0.0 < p <= 1.0
    # Normal approximation: z = 500 / sqrt(80500) ~ 1.76 -> two-sided p ~ 0.078 (continuity-corrected ~0.079).
    assert p == pytest.approx(0.0789, abs=0.003)


def test_mcnemar_log_space_matches_exact_arithmetic() -> None:
    for n, m in [(50, 10), (1500, 700), (2000, 950), (2000, 1000)]:
        exact = stats._binomial_lower_tail_exact(n, m)
        logged = stats._binomial_lower_tail_log(n, m)
        assert logged == pytest.approx(exact, rel=1e-9)


def test_mcnemar_extreme_large_n_does_not_overflow() -> None:
    result = mcnemar_exact(*_discordant(0, 100_000))
    assert result["p_value"] == 0.0  # 2 / 2**100000 underflows; must not raise or be NaN
    assert "p<0.001" in result["interpretation"]


# --- bootstrap accuracy -------------------------------------------------------------------------------------------


def test_bootstrap_ci_contains_estimate_and_has_keys() -> None:
    correct = np.array([True] * 120 + [False] * 30)
    result = bootstrap_accuracy_ci(correct)
    assert set(result) == {"accuracy", "low", "high", "confidence", "resamples", "method"}
    assert result["accuracy"] == pytest.approx(0.8)
    assert result["low"] < result["accuracy"] < result["high"]
    # Binomial standard error sqrt(0.8 * 0.2 / 150) ~ 0.033, so the 95% interval is ~ +-6.4 points.
    assert result["high"] - result["low"] == pytest.approx(0.128, abs=0.02)
    assert result["method"] == "percentile bootstrap"
    assert result["resamples"] == 10_000
    assert result["confidence"] == 0.95


def test_bootstrap_ci_narrows_with_more_data() -> None:
    small = bootstrap_accuracy_ci([True] * 80 + [False] * 20)
    large = bootstrap_accuracy_ci([True] * 8000 + [False] * 2000)
    assert large["high"] - large["low"] < (small["high"] - small["low"]) / 5


def test_bootstrap_ci_reproducible_for_seed() -> None:
    correct = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1] * 15
    assert bootstrap_accuracy_ci(correct, seed=3) == bootstrap_accuracy_ci(correct, seed=3)
    # Different seeds can legitimately land on the same lattice of k/n quantiles, so only same-seed is asserted.
    assert paired_bootstrap_difference(correct, correct[::-1], seed=3) == paired_bootstrap_difference(
        correct, correct[::-1], seed=3
    )


def test_bootstrap_ci_all_correct_and_all_wrong() -> None:
    right = bootstrap_accuracy_ci([True] * 150)
    assert (right["accuracy"], right["low"], right["high"]) == (1.0, 1.0, 1.0)
    wrong = bootstrap_accuracy_ci([False] * 150)
    assert (wrong["accuracy"], wrong["low"], wrong["high"]) == (0.0, 0.0, 0.0)


def test_bootstrap_ci_higher_confidence_is_wider() -> None:
    correct = [True] * 120 + [False] * 30
    narrow = bootstrap_accuracy_ci(correct, confidence=0.8)
    wide = bootstrap_accuracy_ci(correct, confidence=0.99)
    assert wide["low"] <= narrow["low"] and narrow["high"] <= wide["high"]
    assert wide["high"] - wide["low"] > narrow["high"] - narrow["low"]


@pytest.mark.parametrize("kwargs", [{"confidence": 1.0}, {"confidence": 0.0}, {"resamples": 0}])
def test_bootstrap_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        bootstrap_accuracy_ci([True, False], **kwargs)


# --- paired difference --------------------------------------------------------------------------------------------


def test_paired_difference_identical_vectors_is_exactly_zero() -> None:
    correct = np.array([True] * 100 + [False] * 50)
    result = paired_bootstrap_difference(correct, correct)
    assert set(result) == {"difference_points", "low_points", "high_points", "confidence", "resamples"}
    assert result["difference_points"] == 0.0
    assert result["low_points"] == 0.0
    assert result["high_points"] == 0.0


def test_paired_difference_sign_units_and_interval() -> None:
    # b is right on 10 images a got wrong, a on 2 that b got wrong: b is 8 images = 8 points better out of 100.
    a, b = _discordant(2, 10, both=80, neither=8)
    result = paired_bootstrap_difference(a, b)
    assert result["difference_points"] == pytest.approx(8.0)
    assert result["low_points"] < 8.0 < result["high_points"]
    assert result["low_points"] > 0.0  # consistent with McNemar p ~ 0.039 < 0.05
    swapped = paired_bootstrap_difference(b, a)
    assert swapped["difference_points"] == pytest.approx(-8.0)


def test_paired_is_narrower_than_unpaired_spread() -> None:
    # Two models that agree on almost every image: the paired interval must be far narrower than the accuracy ones.
    a, b = _discordant(1, 2, both=120, neither=27)
    paired = paired_bootstrap_difference(a, b)
    single = bootstrap_accuracy_ci(a)
    assert paired["high_points"] - paired["low_points"] < (single["high"] - single["low"]) * 100 / 2


# --- per-class views ----------------------------------------------------------------------------------------------


def test_confusion_matrix_hand_example() -> None:
    labels = [0, 0, 0, 1, 1, 2]
    predictions = [0, 1, 0, 1, 2, 2]
    assert confusion_matrix(labels, predictions, 3) == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert confusion_matrix(np.array(labels), np.array(predictions), 4)[3] == [0, 0, 0, 0]


def test_confusion_matrix_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix([0.0, 1.0], [0, 1], 2)


def test_per_class_accuracy() -> None:
    labels = [0, 0, 0, 1, 1, 2]
    predictions = [0, 1, 0, 1, 2, 2]
    result = per_class_accuracy(labels, predictions, ["ant", "bee", "wasp", "moth"])
    assert result["ant"]["correct"] == 2
    assert result["ant"]["total"] == 3
    assert result["ant"]["accuracy"] == pytest.approx(2 / 3)
    assert result["ant"]["recall"] == result["ant"]["accuracy"]
    assert result["ant"]["precision"] == 1.0
    assert result["ant"]["f1"] == pytest.approx(0.8)
    assert result["bee"]["precision"] == pytest.approx(0.5)
    assert result["bee"]["accuracy"] == pytest.approx(0.5)
    assert result["wasp"]["precision"] == pytest.approx(0.5)
    assert result["wasp"]["accuracy"] == 1.0
    assert result["moth"] == {
        "correct": 0,
        "total": 0,
        "accuracy": None,
        "precision": None,
        "recall": None,
        "f1": None,
    }


def test_agreement() -> None:
    result = agreement([0, 1, 2, 1], np.array([0, 2, 2, 0]))
    assert result == {"agreement": 0.5, "disagreements": 2, "indices": [1, 3]}
    assert agreement([1, 1], [1, 1]) == {"agreement": 1.0, "disagreements": 0, "indices": []}


# --- validation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: bootstrap_accuracy_ci([]),
        lambda: paired_bootstrap_difference([True], [True, False]),
        lambda: mcnemar_exact([True, False, True], [True]),
        lambda: confusion_matrix([0, 1], [0], 2),
        lambda: per_class_accuracy([0, 1, 1], [0, 1], ["x", "y"]),
        lambda: agreement([0, 1], [0, 1, 1]),
        lambda: compare_to_baseline([0, 1], [0, 1], [0]),
        lambda: agreement([], []),
    ],
)
def test_length_mismatch_and_empty_raise(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_length_mismatch_message_names_inputs() -> None:
    with pytest.raises(ValueError, match="correct_a has 3, correct_b has 1"):
        mcnemar_exact([True, False, True], [True])


def test_correct_vectors_must_be_boolean() -> None:
    with pytest.raises(ValueError, match="booleans"):
        bootstrap_accuracy_ci([0, 1, 2])


# --- bundle -------------------------------------------------------------------------------------------------------


def test_compare_to_baseline() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=150)
    baseline = labels.copy()
    baseline[:15] = 1 - baseline[:15]  # baseline wrong on 0..14
    artefact = labels.copy()
    artefact[10:20] = 1 - artefact[10:20]  # artefact wrong on 10..19
    result = compare_to_baseline(labels.tolist(), baseline, artefact, seed=5)
    assert set(result) == {"images", "accuracy", "baseline_accuracy", "difference", "mcnemar", "agreement"}
    assert result["images"] == 150
    assert result["accuracy"]["accuracy"] == pytest.approx(140 / 150)
    assert result["baseline_accuracy"]["accuracy"] == pytest.approx(135 / 150)
    assert result["difference"]["difference_points"] == pytest.approx(5 * 100 / 150)
    assert result["mcnemar"]["a_only_correct"] == 5  # 15..19: baseline right, artefact wrong
    assert result["mcnemar"]["b_only_correct"] == 10  # 0..9: baseline wrong, artefact right
    assert result["agreement"]["indices"] == [*range(10), *range(15, 20)]
    assert result == compare_to_baseline(labels, baseline, artefact, seed=5)


def test_wilson_interval_keeps_its_width_where_the_bootstrap_collapses() -> None:
    from edgetl.stats import wilson_interval

    low, high = wilson_interval(72, 72)
    assert high == 1.0 and 0.949 < low < 0.950, "72 of 72 says 'at least about 95 %', not '100 %'"
    boot = bootstrap_accuracy_ci([1] * 72)
    assert boot["low"] == boot["high"] == 1.0
    low, high = wilson_interval(168, 177)
    assert low < 168 / 177 < high and 0.90 < low < 0.91 and 0.97 < high < 0.98
    assert wilson_interval(0, 0) == (0.0, 1.0)
