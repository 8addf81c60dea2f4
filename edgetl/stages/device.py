"""Device stage: the finished bundle measured on the device itself, over SSH (profile `on_device:`).

Thin: fingerprint the bundle (its bundle.json holds every file's hash) and the destination, call
`edgetl.measure.remote.bench_remote`, keep the device's bench.json/bench.md. The report shows those
figures as the device's, labelled with its description, next to the build machine's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl import layout
from edgetl.errors import UserInputError
from edgetl.profile import profile_section
from edgetl.stages.base import BuildContext, Stage
from edgetl.summaries import DeviceSummary


class DeviceStage(Stage):
    name = "device"
    summary_type = DeviceSummary

    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        return {
            "bundle": ctx.results["package"].files[f"{layout.BUNDLE_DIR}/{layout.BUNDLE_INFO}"],
            "on_device": profile_section(ctx.profile, "on_device"),
        }

    def run(self, ctx: BuildContext, out: Path) -> DeviceSummary:
        from edgetl.measure.remote import bench_remote

        cfg = ctx.profile.on_device
        assert cfg is not None  # the pipeline adds this stage only when the profile asks for it
        bundle = ctx.results["package"].path(layout.BUNDLE_DIR)
        try:
            results = bench_remote(
                bundle,
                cfg.ssh,
                out / layout.DEVICE_DIR,
                cfg.edgetl,
                cfg.ssh_options,
                log=lambda message: ctx.log.stage(self.name, message),
            )
        except UserInputError as error:  # name the profile field that sent the build there
            raise UserInputError(f"{ctx.loaded.path}: on_device: {error.message}", hint=error.hint) from None
        return DeviceSummary(
            ssh=cfg.ssh,
            machine=results.get("machine"),
            artifacts={
                name: {
                    "p50_ms": entry["latency_ms"]["p50"],
                    "p90_ms": entry["latency_ms"]["p90"],
                    "agreement": entry["reference_check"]["agreement"],
                    "passed": entry["reference_check"]["passed"],
                }
                for name, entry in results["artifacts"].items()
            },
            bench=f"{layout.DEVICE_DIR}/{layout.BUNDLE_BENCH_MD}",
        )
