"""The search space, the Pareto front and the pick, and the pruner: no builds, milliseconds each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from edgetl.errors import BackboneError, ProfileError
from edgetl.profile import TuneConfig, parse_profile
from edgetl.training.trainer import EpochRecord
from edgetl.tuning.pruning import COST_ATTR, CheaperTrialsPruner, rung_attr
from edgetl.tuning.results import pareto_front, pick
from edgetl.tuning.space import AUGMENTATION_PRESETS, SearchSpace


def space(search: dict[str, Any]) -> SearchSpace:
    return SearchSpace.from_config(TuneConfig.model_validate({"search": search}), "p.yaml")


def test_conditional_parameters_are_sampled_only_where_they_apply() -> None:
    s = space({"strategy": ["feature_extract", "partial"], "unfreeze_blocks": {"low": 1, "high": 6}, "lr": [0.01]})
    frozen = s.sample(optuna.trial.FixedTrial({"strategy": "feature_extract", "lr": 0.01}))
    assert frozen == {"strategy": "feature_extract", "lr": 0.01}, "unfreeze_blocks means nothing for a frozen backbone"
    partial = s.sample(optuna.trial.FixedTrial({"strategy": "partial", "unfreeze_blocks": 4, "lr": 0.01}))
    assert partial["unfreeze_blocks"] == 4


def test_overrides_reach_the_profile_fields_and_presets_expand() -> None:
    s = space({"input_size": [96, 128], "augmentation": ["light"], "finetune.label_smoothing": [0.0, 0.1]})
    nested = s.overrides({"input_size": 96, "augmentation": "light", "finetune.label_smoothing": 0.0})
    assert nested == {
        "backbone": {"input_size": 96},
        "finetune": {"augmentation": AUGMENTATION_PRESETS["light"], "label_smoothing": 0.0},
    }


def test_ranges_become_the_right_distributions() -> None:
    s = space({"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "input_size": {"low": 128, "high": 224, "step": 32}})
    kinds = {p.name: p.distribution() for p in s.parameters}
    assert isinstance(kinds["lr"], optuna.distributions.FloatDistribution) and kinds["lr"].log
    assert isinstance(kinds["input_size"], optuna.distributions.IntDistribution) and kinds["input_size"].step == 32


def test_sampled_values_are_recorded_with_the_parameters_own_distributions() -> None:
    s = space(
        {
            "lr": {"low": 1e-4, "high": 1e-2, "log": True},
            "input_size": {"low": 128, "high": 224, "step": 32},
            "augmentation": ["light", "strong"],
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    values = s.sample(trial)
    assert values["input_size"] in (128, 160, 192, 224) and 1e-4 <= values["lr"] <= 1e-2
    assert trial.distributions == {p.name: p.distribution() for p in s.parameters}


def test_progress_names_the_trial_the_pick_rule_would_choose() -> None:
    from edgetl.tuning.progress import best_so_far

    study = optuna.create_study(directions=["maximize", "minimize"])
    assert best_so_far(study) == "no feasible trial yet"
    for correct, latency in [(50, 4.0), (49, 1.5), (47, 1.0)]:
        trial = study.ask()
        trial.set_user_attr(
            "measured",
            {
                "accuracy": correct / 50,
                "correct": correct,
                "images": 50,
                "latency_ms": latency,
                "size_mb": 3.9,
                "budgets_failed": [],
            },
        )
        study.tell(trial, [correct / 50, latency])
    # 49/50 is within one holdout image of 50/50 and faster; 47/50 is not.
    assert best_so_far(study).startswith("best so far: trial 1, 98.0% at 1.50 ms")


@pytest.mark.parametrize(
    ("search", "error", "match"),
    [
        ({"learning_rate": [0.1]}, ProfileError, "tune.search.learning_rate: unknown parameter"),
        ({"augmentation": ["wild"]}, ProfileError, "unknown preset"),
        ({"backbone": ["efficientnet_lite9"]}, BackboneError, "efficientnet_lite"),
        ({"lr": []}, ProfileError, "at least one choice"),
    ],
)
def test_bad_search_entries_are_one_line_naming_the_field(search: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        space(search)


def test_profile_tune_section_validation_names_the_field(tmp_path: Path) -> None:
    base = "version: 1\nname: t\ndata: {root: .}\n"
    for tune, match in [
        ("tune: {objectives: [latency]}", "tune.objectives: objectives must include accuracy"),
        ("tune: {time_budget: soon}", "tune.time_budget: 'soon' is not a duration"),
        ("tune: {search: {lr: {low: 0, high: 1, log: true}}}", "a log range needs low > 0"),
    ]:
        with pytest.raises(ProfileError, match=match):
            parse_profile(base + tune + "\n", tmp_path / "p.yaml")


def test_the_profile_itself_is_the_first_point_where_it_lies_in_the_space(tmp_path: Path) -> None:
    profile = parse_profile(
        "version: 1\nname: t\ndata: {root: .}\nfinetune: {strategy: partial, lr: 0.002}\n", tmp_path / "p.yaml"
    )
    s = space(
        {
            "strategy": ["partial", "full"],
            "lr": {"low": 1e-3, "high": 1e-2},
            "input_size": [128, 224],
            "augmentation": ["light", "default"],
            "epochs": [4, 8],
        }
    )
    expected = {"strategy": "partial", "lr": 0.002, "input_size": 224, "augmentation": "default"}
    assert s.profile_values(profile) == expected


def row(
    trial: int,
    accuracy: float,
    latency: float,
    size: float = 4.0,
    feasible: bool = True,
    images: int = 50,
    state: str = "complete",
) -> dict[str, Any]:
    return {
        "trial": trial,
        "state": state,
        "accuracy": accuracy,
        "latency_ms": latency,
        "size_mb": size,
        "feasible": feasible,
        "images": images,
        "params": {},
        "correct": round(accuracy * images),
    }


def test_front_keeps_only_undominated_feasible_complete_trials() -> None:
    rows = [
        row(0, 0.90, 5.0),
        row(1, 0.94, 6.0),
        row(2, 0.88, 6.5),  # dominated by 0
        row(3, 0.99, 1.0, feasible=False),  # over a budget
        row(4, 0.99, 1.0, state="pruned"),
        row(5, 0.80, 2.0),
    ]
    assert [r["trial"] for r in pareto_front(rows, ["accuracy", "latency"])] == [1, 0, 5]
    assert [r["trial"] for r in pareto_front(rows, ["accuracy"])] == [1]


def test_pick_treats_one_holdout_image_as_a_tie_and_takes_the_faster() -> None:
    front = [row(1, 0.94, 6.0), row(0, 0.92, 3.0), row(5, 0.80, 2.0)]  # 0.02 = one image of 50
    assert pick(front)["trial"] == 0
    assert pick([row(1, 0.96, 6.0), row(0, 0.92, 3.0)])["trial"] == 1, "two images better is not a tie"
    assert pick([]) is None


def flowers_like(trial_3_correct: int = 111) -> list[dict[str, Any]]:
    """Four trials shaped like the flowers study: three tied at the top of a 112-image holdout, 1.4-4.3 ms."""
    return [
        row(0, 111 / 112, 4.3, images=112),
        row(3, trial_3_correct / 112, 3.3, images=112),
        row(29, 111 / 112, 1.4, images=112),
        row(6, 108 / 112, 1.39, images=112),
    ]


def test_a_second_fold_decides_between_tied_trials() -> None:
    from edgetl.tuning.results import tied_best

    rows = flowers_like()
    assert sorted(r["trial"] for r in tied_best(rows)) == [0, 3, 29]
    assert pick(rows)["trial"] == 29, "on one fold the fastest of the tied wins"
    second = {"0": {"correct": 110}, "3": {"correct": 109}, "29": {"correct": 104}}
    assert pick(tied_best(rows), second)["trial"] == 3, "221 and 220 of 224 beat 215: the fastest of those two"


def test_a_pick_much_faster_than_trials_it_ties_with_says_what_the_holdout_cannot_tell() -> None:
    from edgetl.report.sections import tuning_lines
    from edgetl.tuning.results import holdout_limit, tied_best

    rows = flowers_like(trial_3_correct=112)
    chosen = pick(rows)
    assert chosen["trial"] == 29
    limit = holdout_limit(rows, chosen)
    assert limit is not None and limit["slower_trials"] == [0, 3]
    assert limit["safer"]["trial"] == 3, "the most accurate of the slower tied trials"
    low, high = limit["pick_interval"]
    assert 0.95 < low < 0.96 and 0.998 < high < 0.999, "Wilson 95 % of 111/112"
    assert "tune/safer.yaml" in limit["text"] and "3.1x slower" in limit["text"]
    # With a second fold the counts of both folds are used, and only the confirmed trials compete.
    second = {
        "0": {"correct": 110, "images": 112},
        "3": {"correct": 109, "images": 112},
        "29": {"correct": 110, "images": 112},
    }
    confirmed = pick(tied_best(rows), second)
    limit = holdout_limit(rows, confirmed, second)
    assert confirmed["trial"] == 29 and limit["pick_correct"] == 221 and limit["pick_images"] == 224
    assert limit["safer"]["trial"] == 3  # 221/224 at 3.3 ms beats 221/224 at 4.3 ms
    # No slower trial ties with the pick (or none is 1.3x slower): nothing to say.
    assert (
        holdout_limit(
            [row(29, 111 / 112, 1.4, images=112), row(0, 111 / 112, 1.7, images=112)],
            row(29, 111 / 112, 1.4, images=112),
        )
        is None
    )
    assert holdout_limit(rows, None) is None
    section = {
        "study": "s",
        "storage": "sqlite",
        "trials": {"complete": 4, "pruned": 0, "failed": 0},
        "objectives": ["accuracy", "latency"],
        "holdout": "20%",
        "latency_source": "measured",
        "pick": {"trial": 29},
        "confirmation": {},
        "holdout_limit": limit["text"],
        "front_columns": ["holdout top-1"],
        "front": [],
        "files": {"trials_csv": "a", "trials_json": "b", "pareto_md": "c", "pareto_png": "d"},
    }
    text = "\n".join(tuning_lines({"tuning": section}))
    assert "**What the holdout cannot tell.** The tune holdout cannot separate the pick" in text


def record(epoch: int, accuracy: float) -> EpochRecord:
    return EpochRecord(
        epoch=epoch,
        trainable_blocks=0,
        train_loss=0.1,
        train_accuracy=1.0,
        holdout_loss=0.1,
        holdout_accuracy=accuracy,
        lr=0.01,
        seconds=0.1,
    )


def test_pruner_compares_only_with_trials_at_most_as_costly() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for accuracy, cost in [(0.9, 100.0), (0.9, 100.0), (0.95, 500.0), (0.95, 500.0)]:
        done = study.ask()
        done.set_user_attr(COST_ATTR, cost)
        done.set_user_attr(rung_attr(2), accuracy)
        study.tell(done, [accuracy, cost])
    cheap = study.ask()
    cheap.set_user_attr(COST_ATTR, 50.0)
    CheaperTrialsPruner(study, cheap, 50.0)(record(2, 0.5))  # nothing as cheap to compare with: kept
    costly = study.ask()
    costly.set_user_attr(COST_ATTR, 1000.0)
    CheaperTrialsPruner(study, costly, 1000.0)(record(1, 0.1))  # epoch 1 (the warm-up) is not a rung: kept
    CheaperTrialsPruner(study, costly, 1000.0)(record(3, 0.1))  # 3 is not a rung
    with pytest.raises(optuna.TrialPruned, match="epoch 2: holdout accuracy 80.0%; 4 of 5"):
        CheaperTrialsPruner(study, costly, 1000.0)(record(2, 0.8))
    assert costly.user_attrs["pruned_at"] == {"epoch": 2, "holdout_accuracy": 0.8}
    middle = study.ask()
    CheaperTrialsPruner(study, middle, 100.0)(record(2, 0.92))  # best among those at most as costly: kept


def test_tune_without_a_tune_section_or_with_a_bad_budget_is_one_line(tmp_path: Path, capsys) -> None:
    from tests.helpers import run_cli, write_profile

    profile = write_profile(tmp_path / "p.yaml", {"version": 1, "name": "t", "data": {"root": str(tmp_path)}})
    code, _, err = run_cli(["tune", str(profile)], capsys)
    assert code == 2 and "no tune section" in err and "Traceback" not in err
    write_profile(profile, {"version": 1, "name": "t", "data": {"root": str(tmp_path)}, "tune": {}})
    code, _, err = run_cli(["tune", str(profile), "--time-budget", "soon"], capsys)
    assert code == 2 and "--time-budget: 'soon' is not a duration" in err


def test_latency_of_a_target_that_is_not_this_machine_is_labelled_an_estimate(tmp_path: Path) -> None:
    from edgetl.tuning.search import latency_source

    here = parse_profile("version: 1\nname: t\ndata: {root: .}\n", tmp_path / "p.yaml")
    phone = parse_profile("version: 1\nname: t\ndata: {root: .}\ntarget: android-arm64\n", tmp_path / "p.yaml")
    assert latency_source(here).startswith("measured on this machine (target x86-cpu)")
    assert latency_source(phone).startswith("ESTIMATE: measured on this machine's CPU, not on the target android-arm64")


def test_a_search_value_the_profile_refuses_is_caught_before_any_trial(tmp_path: Path) -> None:
    profile = parse_profile("version: 1\nname: t\ndata: {root: .}\n", tmp_path / "p.yaml")
    base = profile.model_dump(mode="json", exclude={"tune"})
    with pytest.raises(ProfileError, match=r"tune.search.input_size: 16 makes an invalid profile \(backbone"):
        space({"input_size": {"low": 16, "high": 224}}).check_values(base, "p.yaml")
    with pytest.raises(ProfileError, match=r"tune.search.finetune.label_smoothing: 1.5 makes an invalid profile"):
        space({"finetune.label_smoothing": [0.1, 1.5]}).check_values(base, "p.yaml")
    space({"input_size": [96, 224], "lr": {"low": 1e-4, "high": 1e-2, "log": True}}).check_values(base, "p.yaml")


def test_a_trial_failing_for_a_stated_reason_is_one_line_not_a_traceback() -> None:
    import logging

    from edgetl.tuning.search import TrialFailed, _one_line_trial_failures

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(logging.Formatter().format(record))

    _one_line_trial_failures()
    handler = Collect()
    logging.getLogger("optuna.study._optimize").addHandler(handler)

    def objective(trial: Any) -> float:
        raise TrialFailed("trial 0: int8: no model meets the accuracy budget")

    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        optuna.create_study().optimize(objective, n_trials=1, catch=(TrialFailed,))
    finally:
        logging.getLogger("optuna.study._optimize").removeHandler(handler)
    failed = [line for line in lines if "Trial 0 failed with parameters" in line]
    assert failed and "no model meets the accuracy budget" in failed[0]
    assert not any("Traceback" in line for line in lines)


def test_redact_hides_a_password_with_an_unencoded_at_sign() -> None:
    from edgetl.tuning.study import redact

    assert redact("postgresql://edgetl:p@ss@db.local:5432/study") == "postgresql://edgetl:***@db.local:5432/study"
    assert redact("postgresql://edgetl:secret@db/x") == "postgresql://edgetl:***@db/x"
    assert redact("sqlite:///tmp/a@b/study.db") == "sqlite:///tmp/a@b/study.db"


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-5"])
def test_heartbeat_must_be_a_sane_number_of_seconds(tmp_path: Path, capsys, value: str) -> None:
    from tests.helpers import run_cli

    code, _, err = run_cli(["tune", str(tmp_path / "p.yaml"), "--heartbeat", value], capsys)
    assert code == 2 and "--heartbeat" in err and "storage" not in err, err


def test_a_refused_storage_leaves_no_tune_folder_behind(tiny_data: Path, tmp_path: Path, capsys) -> None:
    from tests.helpers import run_cli, tiny_profile, write_profile

    run = tmp_path / "runs" / "t"
    profile = write_profile(tmp_path / "p.yaml", tiny_profile(tiny_data, run, tune={"trials": 2}))
    storage = "postgresql://edgetl:secret@127.0.0.1:9/study"  # nothing listens on port 9
    code, _, err = run_cli(["tune", str(profile), "--storage", storage], capsys)
    assert code == 2 and "storage postgresql+psycopg://edgetl:***@127.0.0.1:9/study" in err, err
    assert "secret" not in err and not run.exists() and not run.parent.exists()


def test_the_run_directory_is_marked_before_a_worker_writes_into_it(
    tiny_data: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second worker that checks the folder while the first opens its study must see an edgetl run directory."""
    import edgetl.tuning.search as search_module
    from edgetl.pipeline import is_run_dir
    from tests.helpers import run_cli, tiny_profile, write_profile

    run = tmp_path / "run"
    profile = write_profile(tmp_path / "p.yaml", tiny_profile(tiny_data, run, tune={"trials": 2}))
    seen: list[bool] = []

    def refuse(url: str, heartbeat: float) -> None:  # the moment the first worker has written into run/
        seen.append(any(run.iterdir()) and is_run_dir(run))
        raise search_module.UserInputError("storage refused for the test")

    monkeypatch.setattr(search_module, "open_storage", refuse)
    code, _, err = run_cli(["tune", str(profile)], capsys)
    assert code == 2 and "storage refused for the test" in err, err
    assert seen == [True], "tune/ was written before the folder was marked as a run directory"
    assert not run.exists(), "the refused start left its marker or tune/ behind"
