"""`edgetl tune` workers for real on a tiny generated dataset: two on one study, one killed, Ctrl-C.

The worker tests run on PostgreSQL when EDGETL_TEST_POSTGRES_URL is set (`.ci/run` starts Debian's
server and sets it, with EDGETL_REQUIRE_POSTGRES=1 so a missing server fails there instead of
skipping); otherwise on the SQLite default.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

from tests.tune.test_tune import tune_profile


@pytest.fixture
def storage(tmp_path: Path) -> str:
    url = os.environ.get("EDGETL_TEST_POSTGRES_URL")
    if url:
        return url
    if os.environ.get("EDGETL_REQUIRE_POSTGRES") == "1":
        pytest.fail("EDGETL_REQUIRE_POSTGRES=1 but EDGETL_TEST_POSTGRES_URL is not set")
    return f"sqlite:///{tmp_path / 'shared-study.db'}"


def _worker(profile: Path, storage: str, study: str, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "edgetl", "tune", str(profile), "--storage", storage, "--study", study]
    return subprocess.Popen(
        [*command, "--resume", "--no-final", "--quiet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "EDGETL_OFFLINE": "1"},
    )


def _trials(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    from edgetl.tuning.study import open_storage, storage_url

    return optuna.load_study(study_name=study, storage=open_storage(storage_url(storage, Path()))).get_trials()


def test_two_workers_share_one_study_and_no_trial_runs_twice(tiny_data: Path, tmp_path: Path, storage: str) -> None:
    profile = tune_profile(tiny_data, tmp_path, trials=3)
    study = f"workers-{uuid.uuid4().hex[:8]}"
    workers = [_worker(profile, storage, study), _worker(profile, storage, study)]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err
    trials = _trials(storage, study)
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) >= 3
    assert len({t.number for t in trials}) == len(trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both workers ran trials"
    logs = sorted(p.name for p in (tmp_path / "run/tune/logs").glob("trial-*.log"))
    assert logs == [f"trial-{t.number:04d}.log" for t in sorted(trials, key=lambda t: t.number)]
    for t in trials:  # each trial's log holds one build: one worker ran it, once
        text = (tmp_path / f"run/tune/logs/trial-{t.number:04d}.log").read_text()
        assert text.count("checking images in") + text.count("data up to date, skipped") == 1


def test_a_killed_worker_leaves_its_trial_failed_and_the_study_finishes(
    tiny_data: Path, tmp_path: Path, storage: str
) -> None:
    profile = tune_profile(tiny_data, tmp_path, trials=2)
    study = f"killed-{uuid.uuid4().hex[:8]}"
    doomed = _worker(profile, storage, study, "--heartbeat", "1")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            running = [t for t in _trials(storage, study) if t.state == optuna.trial.TrialState.RUNNING]
        except KeyError:  # study not created yet
            running = []
        if running and (tmp_path / "run/tune/logs/trial-0000.log").is_file():
            break
        time.sleep(0.5)
    else:
        doomed.kill()
        pytest.fail("the first worker never started a trial")
    time.sleep(2)  # mid-build
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=60)
    time.sleep(3)  # longer than its grace period (2 x 1 s heartbeat)

    survivor = _worker(profile, storage, study, "--heartbeat", "1")
    _, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err
    states = {t.number: t.state for t in _trials(storage, study)}
    assert states[0] == optuna.trial.TrialState.FAIL, "the killed worker's trial is marked failed"
    done = [n for n, s in states.items() if s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(done) == 2 and 0 not in done
    assert optuna.trial.TrialState.RUNNING not in states.values()


# `edgetl tune` with a Ctrl-C delivered from inside trial 1's training: the real signal, through the real
# CLI, at a point that does not depend on how fast this machine trains (a sleep-based test once let every
# trial finish before the signal landed). The pruner's per-epoch hook is where the signal is raised.
_CTRL_C_IN_TRIAL_1 = """
import os, signal, sys
import edgetl.pipeline as pipeline

real_build = pipeline.build


def build(path, *args, on_epoch_end=None, **kwargs):
    pruner = on_epoch_end

    def ctrl_c(record):
        if pruner is not None:
            pruner(record)
        os.kill(os.getpid(), signal.SIGINT)

    hook = ctrl_c if "trial-0001" in str(path) else pruner
    return real_build(path, *args, on_epoch_end=hook, **kwargs)


pipeline.build = build
from edgetl.cli import main

main(sys.argv[1:])
"""


def test_ctrl_c_keeps_finished_trials_and_writes_the_outputs(tiny_data: Path, tmp_path: Path) -> None:
    profile = tune_profile(tiny_data, tmp_path, trials=3)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    command = ["tune", str(profile), "--storage", storage, "--study", "interrupted", "--resume", "--no-final"]
    worker = subprocess.run(
        [sys.executable, "-c", _CTRL_C_IN_TRIAL_1, *command, "--quiet"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "EDGETL_OFFLINE": "1"},
        # A test run started in the background (`cmd &`) ignores SIGINT, and children inherit that;
        # give the worker Python's normal Ctrl-C handling, as in a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    err = worker.stderr
    assert worker.returncode == 130, err
    assert "finished trials are kept" in err and "--resume continues" in err
    rows = json.loads((tmp_path / "run/tune/trials.json").read_text())["trials"]
    assert [r["state"] for r in rows] == ["complete", "fail"], "trial 1 interrupted, trial 2 never started"
