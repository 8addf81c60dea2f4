"""`edgetl tune`: the most accurate model that fits the device, found by measuring the shipped artefact.

    run_tune("profile.yaml", TuneOptions(trials=20, time_budget="30m"))

Optuna does the search (multi-objective TPE by default) in its RDB storage, so workers on several
machines can share one study; edgetl supplies the trials (complete builds scored on a tune holdout,
with the deployed artefact's measured latency), pruning that respects the Pareto front, the
`tune/` outputs, and the final build of the pick evaluated once on val. See `search.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl.console import Log
from edgetl.files import write_text_atomic
from edgetl.machine import describe_machine
from edgetl.profile import LoadedProfile, load_profile
from edgetl.tuning import results
from edgetl.tuning.results import TUNE_DIR
from edgetl.tuning.search import Search, TuneOptions, TuneOutcome, latency_source, write_profile
from edgetl.tuning.study import redact

__all__ = ["TuneOptions", "TuneOutcome", "run_tune", "write_outputs"]


def run_tune(profile_path: str | Path | LoadedProfile, options: TuneOptions, log: Log | None = None) -> TuneOutcome:
    """Search, write `tune/`, then (unless interrupted or told not to) build the pick and evaluate it on val."""
    log = log or Log()
    loaded = profile_path if isinstance(profile_path, LoadedProfile) else load_profile(profile_path)
    from edgetl.pipeline import check_run_dir

    check_run_dir(loaded.output_dir, loaded)  # the same refusals as a build, before tune/ is written
    search = Search(loaded, options, log)
    study = search.open()
    log(
        f"study {search.study_name} in {redact(search.url)}: {search.total} trials, {len(search.space.parameters)} "
        f"parameters, objectives {', '.join(search.cfg.objectives)}; trial logs in {search.tune_dir / 'logs'}"
    )
    for parameter in search.space.describe():
        values = parameter.get("choices", parameter.get("range"))
        log(f"  {parameter['name']} ({parameter['field']}): {values}")
    interrupted = search.run(study)
    final_wanted = options.final_build if options.final_build is not None else search.cfg.final_build
    if final_wanted and not interrupted:
        search.confirm(study)  # where several trials tie, the pick rests on two holdout folds
    summary = write_outputs(search, study)
    if summary["holdout_limit"]:
        log.warn(summary["holdout_limit"]["text"])
    outcome = TuneOutcome(search.tune_dir, search.study_name, summary, interrupted=interrupted)
    if interrupted or not final_wanted or summary["pick"] is None:
        return outcome
    from edgetl.pipeline import build

    log(f"final build: trial {summary['pick']['trial']}'s settings on the whole train split, evaluated on val once")
    outcome.final = build(search.tune_dir / results.FINAL_PROFILE, log=log, tuning=report_section(summary))
    return outcome


def write_outputs(search: Search, study: Any) -> dict[str, Any]:
    """tune/: trials (CSV + JSON), the front (Markdown + PNG + one profile per point), best.yaml, final.yaml."""
    tune_dir = search.tune_dir
    profile = search.loaded.profile
    rows = results.trial_rows(study)
    objectives = list(search.cfg.objectives)
    front = results.pareto_front(rows, objectives)
    confirmation = dict(study.user_attrs.get("confirmation") or {})
    chosen = results.pick(results.tied_best(rows) if confirmation else front, confirmation)
    info = {
        "name": search.study_name,
        "storage": redact(search.url),
        "objectives": objectives,
        "holdout": f"{search.cfg.holdout_fraction:.0%} of each train class, seeded; val never used",
        "latency_source": latency_source(profile),
        "cpu": describe_machine()["cpu"],
        "space": search.space.describe(),
        "confirmation": confirmation,
        "counts": {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail", "running")},
    }
    info["holdout_limit"] = results.holdout_limit(rows, chosen, confirmation)
    results.write_tables(tune_dir, rows, info)
    write_text_atomic(tune_dir / results.PARETO_MD, results.render_front(info, rows, front, chosen))
    results.plot_front(tune_dir / results.PARETO_PNG, rows, front, chosen, f"{profile.name}: study {search.study_name}")
    results.write_front_profiles(tune_dir, front, chosen)
    if chosen is not None:
        _write_val_profile(search, chosen, results.FINAL_PROFILE, search.loaded.output_dir, "the pick")
    if info["holdout_limit"]:
        safer = next(r for r in rows if r["trial"] == info["holdout_limit"]["safer"]["trial"])
        what = "the most accurate trial the holdout could not tell from the faster pick"
        _write_val_profile(search, safer, results.SAFER_PROFILE, tune_dir / results.SAFER_DIR, what)
    else:
        (tune_dir / results.SAFER_PROFILE).unlink(missing_ok=True)  # from an earlier state of the study
    return {
        **info,
        "front": front,
        "pick": chosen,
        "tune_dir": str(tune_dir),
    }


def _write_val_profile(search: Search, row: dict[str, Any], name: str, output_dir: Path, what: str) -> None:
    """A trial's settings on the real split (whole train, val) with the profile's own benchmark."""
    import yaml

    data = yaml.safe_load((search.tune_dir / row["profile"]).read_text(encoding="utf-8"))
    data["data"].pop("tune_holdout", None)
    data["data"].pop("tune_fold", None)
    data["output_dir"] = str(output_dir)
    data["benchmark"] = search.base["benchmark"]
    data["tracking"] = search.loaded.profile.tracking.model_dump(mode="json")
    write_profile(
        search.tune_dir / name,
        data,
        f"edgetl tune, study {search.study_name}: {what} (trial {row['trial']}: "
        f"{results.settings_text(row['params'])})\non the whole train split, evaluated on val.",
    )


def report_section(summary: dict[str, Any]) -> dict[str, Any]:
    """What the final build's report says about the search (paths relative to the run directory)."""
    pick = summary["pick"]

    def rel(name: str) -> str:
        return f"{TUNE_DIR}/{name}"

    return {
        "study": summary["name"],
        "storage": summary["storage"],
        "trials": {
            "complete": summary["counts"]["complete"],
            "pruned": summary["counts"]["pruned"],
            "failed": summary["counts"]["fail"],
        },
        "objectives": summary["objectives"],
        "holdout": summary["holdout"],
        "latency_source": summary["latency_source"],
        "pick": {
            "trial": pick["trial"],
            "params": pick["params"],
            "holdout_accuracy": pick["accuracy"],
            "latency_ms": pick["latency_ms"],
            "size_mb": pick["size_mb"],
        },
        "holdout_limit": summary["holdout_limit"]["text"] if summary.get("holdout_limit") else None,
        "confirmation": {
            trial: f"{row['correct']}/{row['images']} on the second fold"
            for trial, row in summary["confirmation"].items()
        },
        "front_columns": results.FRONT_COLUMNS,
        "front": [
            {
                "trial": row["trial"],
                "cells": results.front_cells(row),
                "settings": results.settings_text(row["params"]),
                "profile": rel(f"{results.FRONT_DIR}/trial-{row['trial']:04d}.yaml"),
            }
            for row in summary["front"]
        ],
        "files": {
            "trials_csv": rel(results.TRIALS_CSV),
            "trials_json": rel(results.TRIALS_JSON),
            "pareto_md": rel(results.PARETO_MD),
            "pareto_png": rel(results.PARETO_PNG),
            "best": rel(results.BEST),
        },
    }
