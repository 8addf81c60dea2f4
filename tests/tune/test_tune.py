"""`edgetl tune` for real on a tiny generated dataset: trials, outputs, final build, resume, tracking.

Several workers on one study, a killed worker and Ctrl-C are in test_tune_workers.py (a file of their
own, so pytest-xdist runs them beside this one).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from edgetl.console import Log
from edgetl.pipeline import build
from tests.helpers import run_cli, tiny_profile, write_profile

SEARCH = {"input_size": [64, 96], "lr": {"low": 0.003, "high": 0.03, "log": True}}


def tune_profile(data: Path, tmp_path: Path, **tune: object) -> Path:
    profile = tiny_profile(
        data,
        tmp_path / "run",
        package={"pixels_model": "off"},
        benchmark={"memory": False, "compute_peak": False},
        tune={"trials": 3, "startup_trials": 2, "search": SEARCH, **tune},
        tracking={"mlflow": {}, "tensorboard": {}},
    )
    return write_profile(tmp_path / "tune.yaml", profile)


def test_tune_writes_its_outputs_builds_the_pick_on_val_and_resumes(tiny_data: Path, tmp_path: Path, capsys) -> None:
    profile = tune_profile(tiny_data, tmp_path, trials=2, confirm=2)
    code, _, err = run_cli(["tune", str(profile), "--quiet"], capsys)
    assert code == 0, err
    run = tmp_path / "run"
    tune = run / "tune"
    trials = json.loads((tune / "trials.json").read_text())["trials"]
    assert [t["state"] for t in trials] == ["complete"] * 2
    assert trials[0]["origin"].startswith("the profile's own values")
    for t in trials:  # every trial scored on a share of train; val never read
        split = json.loads((tune / t["run_dir"] / "data/split.json").read_text())
        assert split["val"] and all(rel.startswith("train/") for rel, _ in split["val"]), t["trial"]
        assert "tune holdout" in split["val_source"]
    assert (tune / "trials.csv").read_text().count("\n") == 3
    assert (tune / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    # A 4-image holdout ties both trials: both are rebuilt on fold 1.
    confirmed = json.loads((tune / "trials.json").read_text())["study"]["confirmation"]
    assert len(confirmed) == 2 and all(c["images"] == 4 for c in confirmed.values())
    for number in confirmed:
        split = json.loads((tune / f"confirm/{int(number):04d}/data/split.json").read_text())
        assert "fold 1" in split["val_source"] and all(rel.startswith("train/") for rel, _ in split["val"])
    assert "## Confirmation on a second holdout fold" in (tune / "pareto.md").read_text()
    limit = json.loads((tune / "trials.json").read_text())["study"]["holdout_limit"]
    assert (tune / "safer.yaml").is_file() == (limit is not None), "safer.yaml exactly when the holdout could not tell"
    if limit is not None:
        safer = yaml.safe_load((tune / "safer.yaml").read_text())
        assert "tune_holdout" not in safer["data"] and safer["output_dir"] == str(tune / "safer")
        assert "## What the holdout cannot tell" in (tune / "pareto.md").read_text()
    front = list((tune / "front").glob("trial-*.yaml"))
    assert front and (tune / "best.yaml").is_file() and "## Pareto front" in (tune / "pareto.md").read_text()

    report = json.loads((run / "report.json").read_text())
    assert report["eval"]["split"] == "val" and report["eval"]["images"] == 10, "the pick is evaluated on val"
    pick = report["tuning"]["pick"]
    final = yaml.safe_load((tune / "final.yaml").read_text())
    assert "tune_holdout" not in final["data"] and final["backbone"]["input_size"] == pick["params"]["input_size"]
    markdown = (run / "report.md").read_text()
    assert "## Tuning" in markdown and "tune/pareto.png" in markdown and "evaluated on val **once**" in markdown
    assert "rebuilt on a second holdout fold" in markdown

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    kinds = sorted(r.data.tags["edgetl.kind"] for r in runs)
    assert kinds == ["build", "tune-trial", "tune-trial"]
    trial_run = next(r for r in runs if r.data.tags["edgetl.kind"] == "tune-trial")
    assert {"accuracy", "latency_p50_ms", "size_mb"} <= set(trial_run.data.metrics)
    assert "input_size" in trial_run.data.params
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))

    # best.yaml reproduces its trial: the same settings and split give the same predictions.
    best = yaml.safe_load((tune / "best.yaml").read_text())
    chosen = next(t for t in trials if Path(best["output_dir"]).name == f"trial-{t['trial']:04d}")
    rebuilt = build(tune / "best.yaml", log=Log(quiet=True)).report
    entry = rebuilt["artifacts"][rebuilt["deployed_artifact"]]
    assert (entry["correct"], entry["total"]) == (chosen["correct"], chosen["images"])

    code, _, err = run_cli(["tune", str(profile), "--quiet"], capsys)
    assert code == 2 and "already exists with 2 trial(s)" in err and "--resume" in err
    code, _, err = run_cli(["tune", str(profile), "--resume", "--trials", "3", "--no-final", "--quiet"], capsys)
    assert code == 0, err
    assert len(json.loads((tune / "trials.json").read_text())["trials"]) == 3
    assert len(list((tune / "logs").glob("trial-*.log"))) == 3, "finished trials are not run again"

    other = yaml.safe_load(profile.read_text())
    other["tune"]["search"] = {"input_size": [64]}
    write_profile(profile, other)
    code, _, err = run_cli(["tune", str(profile), "--resume", "--quiet"], capsys)
    assert code == 2 and "was created for another search (different space)" in err
