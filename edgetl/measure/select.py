"""Which artefact ships: the target's, or (`benchmark.deploy: fastest`) the fastest one that passes, measured.

Which runtime is faster depends on the CPU (issue 13: OpenVINO 1.10x faster than ONNX Runtime on
one Xeon for the same int8 model), so on a target that allows it the build measures every
candidate in the same interleaved run and ships the fastest one that:
- passes every budget of the profile (accuracy, size, latency, speed-up), and
- when it was converted from another artefact (an OpenVINO IR from the Q/DQ ONNX), agrees with
  that source on at least `benchmark.min_runtime_agreement` % of val images: the same model in
  another runtime must predict the same, whatever the accuracy budgets say.
When none passes, the target's artefact ships and the budgets fail the build as usual. A converted
artefact that the target deploys by name must pass the agreement check too, or the build stops.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgetl.backends import ARTIFACTS
from edgetl.errors import VerificationError
from edgetl.plan import build_plan
from edgetl.profile import Profile
from edgetl.report.budgets import budget_view, evaluate_budgets


def runtime_agreement(measured: dict[str, dict[str, Any]], name: str) -> tuple[str, float] | None:
    """(source, % top-1 agreement on val) for a converted artefact whose source was measured too."""
    source = ARTIFACTS[name].source
    if ARTIFACTS[name].stage != "convert" or source not in measured:
        return None
    mine, theirs = np.asarray(measured[name]["predictions"]), np.asarray(measured[source]["predictions"])
    return source, float((mine == theirs).mean() * 100.0) if len(mine) else 0.0


def deployable(measured: dict[str, dict[str, Any]]) -> list[str]:
    """Measured artefacts a device can run: not the training checkpoint, not an engine built for one GPU."""
    return [name for name in measured if ARTIFACTS[name].backend != "torch" and ARTIFACTS[name].stage != "package"]


def evaluate_candidate(measured: dict[str, dict[str, Any]], name: str, profile: Profile) -> dict[str, Any]:
    """One artefact's measurements against the profile's budgets and the runtime-agreement floor."""
    floor = profile.benchmark.min_runtime_agreement
    view = budget_view(measured, name, profile.benchmark.baseline)
    failed = [b.message for b in evaluate_budgets(profile.budgets, {name: view}, name) if not b.passed]
    agreement = runtime_agreement(measured, name)
    if agreement is not None and agreement[1] < floor:
        failed.append(f"agrees with {agreement[0]} on {agreement[1]:.1f} % of val images (< {floor:g} %)")
    return {
        "artifact": name,
        "p50_ms": view["latency_ms"]["p50"],
        "accuracy": view["accuracy"],
        "size_bytes": view["size_bytes"],
        "runtime_agreement": None if agreement is None else {"with": agreement[0], "percent": agreement[1]},
        "passed": not failed,
        "failed": failed,
    }


def device_candidates(results: dict[str, Any], profile: Profile) -> list[dict[str, Any]]:
    """Artefacts a device may choose between itself, ranked by this build machine's p50 (a guess for the device).

    Only for targets whose device is not the build machine and runs a converted or ONNX artefact (not a
    TensorRT engine, which is built for one GPU): every deployable artefact that passes the profile's
    budgets and the runtime-agreement check. `edgetl bench BUNDLE --select` measures them on the device.
    """
    from edgetl.targets import get_target

    target = get_target(profile.target)
    if target.x86_cpu or target.uses_tensorrt:
        return []
    measured = results["artifacts"]
    evaluated = [evaluate_candidate(measured, name, profile) for name in deployable(measured)]
    ranked = sorted((c for c in evaluated if c["passed"]), key=lambda c: c["p50_ms"])
    return [
        {"artifact": c["artifact"], "p50_ms": c["p50_ms"], "accuracy": c["accuracy"], "build_machine_rank": rank}
        for rank, c in enumerate(ranked, 1)
    ]


def choose_deployed(results: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """The deployment decision with every candidate's measurements and why it won or lost."""
    measured = results["artifacts"]
    default = build_plan(profile).deployed_artifact
    mode = build_plan(profile).deploy_mode
    floor = profile.benchmark.min_runtime_agreement
    names = deployable(measured) if mode == "fastest" else [default]
    candidates = [evaluate_candidate(measured, name, profile) for name in names]
    if mode == "target":
        only = candidates[0]
        if only["runtime_agreement"] is not None and only["runtime_agreement"]["percent"] < floor:
            raise VerificationError(f"{default}: {only['failed'][-1]}; the target deploys it, so the build stops")
        return {
            "mode": mode,
            "artifact": default,
            "reason": f"target {profile.target} deploys {default}",
            "candidates": candidates,
        }
    ranked = sorted(candidates, key=lambda c: (not c["passed"], c["p50_ms"], c["artifact"] != default))
    passing = [c for c in ranked if c["passed"]]
    if not passing:
        return {
            "mode": mode,
            "artifact": default,
            "reason": f"no candidate passed the checks; the target's {default} ships and its budgets decide",
            "candidates": ranked,
        }
    winner = passing[0]
    runner_up = passing[1] if len(passing) > 1 else None
    reason = f"fastest of {len(passing)} passing candidate(s): {winner['artifact']} p50 {winner['p50_ms']:.3f} ms"
    if runner_up is not None:
        reason += (
            f", {runner_up['p50_ms'] / winner['p50_ms']:.2f}x faster than the runner-up {runner_up['artifact']} "
            f"({runner_up['p50_ms']:.3f} ms), measured interleaved in the same run"
        )
    return {
        "mode": mode,
        "artifact": winner["artifact"],
        "runner_up": runner_up["artifact"] if runner_up else None,
        "reason": reason,
        "candidates": ranked,
    }
