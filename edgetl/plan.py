"""What a build of a profile will do, resolved against the target and the artefact catalogue.

The profile (`edgetl.profile.Profile`) is the schema: what the user wrote, validated. The plan is
derived from it: the opset the export ends at, which artefacts the build produces, measures and ships,
and whether the float engine is strongly typed fp16. One place for each of these facts, read by the
stages, the CLI, `edgetl tune` and the profile's own consistency checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgetl.backends import ARTIFACTS, quantizes
from edgetl.targets import Target, get_target

if TYPE_CHECKING:
    from edgetl.profile import Profile


@dataclass(frozen=True)
class BuildPlan:
    target: Target
    onnx_opset: int  # export.opset, lowered to what the target's TensorRT parser reads
    strongly_typed_fp16_engine: bool  # the float engine is built from (and ships) the fp16 ONNX
    convert_runtimes: list[str]  # convert.runtimes, or the target's
    produced_artifacts: list[str]  # every artefact the build writes (engines aside), in catalogue order
    benchmarked_artifacts: list[str]  # benchmark.artifacts, or every produced one
    deploy_mode: str  # "fastest" or "target": benchmark.deploy, or the target's; budgets.artifact pins it
    deployed_artifact: str  # shipped when nothing is chosen by measurement (the default among candidates)


def build_plan(profile: Profile) -> BuildPlan:
    target = get_target(profile.target)
    int8 = profile.optimize.int8.enabled
    runtimes = list(profile.convert.runtimes) if profile.convert.runtimes is not None else list(target.converts_to)
    produced = _produced(profile, runtimes)
    release = target.tensorrt_release()
    return BuildPlan(
        target=target,
        onnx_opset=min(profile.export.opset, release.max_opset) if release is not None else profile.export.opset,
        strongly_typed_fp16_engine=_strongly_typed_fp16(profile, target),
        convert_runtimes=runtimes,
        produced_artifacts=produced,
        benchmarked_artifacts=produced if profile.benchmark.artifacts is None else list(profile.benchmark.artifacts),
        deploy_mode="target" if profile.budgets.artifact is not None else (profile.benchmark.deploy or target.deploy),
        deployed_artifact=profile.budgets.artifact or target.deployed_artifact(int8),
    )


def _produced(profile: Profile, runtimes: list[str]) -> list[str]:
    int8 = profile.optimize.int8.enabled
    made = {"torch_fp32": True, "onnx_fp32": True, "onnx_fp16": profile.optimize.fp16.enabled, "onnx_int8": int8}
    for name, item in ARTIFACTS.items():
        if item.stage == "convert":
            from_source = bool(made.get(item.source or ""))
            made[name] = item.backend in runtimes and from_source and (int8 or not quantizes(name))
    return [name for name in ARTIFACTS if made.get(name)]


def _strongly_typed_fp16(profile: Profile, target: Target) -> bool:
    from edgetl.backends.tensorrt.options import EngineOptions

    release = target.tensorrt_release()
    if release is None or target.engine_precision(profile.optimize.int8.enabled) != "fp16":
        return False
    return EngineOptions(strongly_typed=profile.tensorrt.strongly_typed).strongly_typed_for(release)
