"""Browser stage: the web bundle's own page run in headless Chromium on this machine (web target).

Thin: fingerprint the bundle (bundle.json holds every file's hash), the other ONNX candidates, the
`web:` settings and the browser's version; call `edgetl.measure.browser.check_web_bundle`; keep its
browser.json; fail (exit 4) when the page agrees with `edgetl predict` on fewer val images than
`benchmark.min_runtime_agreement` asks of any runtime. The report shows the page's agreement with
`edgetl predict` on every val image and the page's latency per WebAssembly thread count, as measured
in this machine's Chromium.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl import layout
from edgetl.backends import ARTIFACTS
from edgetl.data.split import read_split
from edgetl.errors import UserInputError
from edgetl.files import write_json_atomic
from edgetl.machine import machine_signature
from edgetl.profile import profile_section
from edgetl.stages.base import BuildContext, Stage
from edgetl.summaries import BenchmarkSummary, BrowserSummary, PackageSummary


class BrowserStage(Stage):
    name = "browser"
    summary_type = BrowserSummary

    def _chromium(self, ctx: BuildContext) -> Path | None:
        from edgetl.measure.browser import find_chromium

        setting = ctx.profile.web.chromium
        if setting == "off":
            return None
        try:
            return find_chromium(None if setting == "auto" else setting)
        except UserInputError as error:  # name the profile field that asked for it
            raise UserInputError(f"{ctx.loaded.path}: web.chromium: {error.message}") from None

    def _alternatives(self, ctx: BuildContext) -> dict[str, Path]:
        """The other ONNX models that passed the budgets: timed in the page next to the shipped one."""
        shipped = ctx.summary("package", PackageSummary).artifact
        names = [c["artifact"] for c in ctx.summary("benchmark", BenchmarkSummary).device_candidates]
        return {name: ctx.artifact_path(name) for name in names if name != shipped and ARTIFACTS[name].format == "onnx"}

    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        from edgetl.measure.browser import chromium_version

        chromium = self._chromium(ctx)
        return {
            "bundle": ctx.results["package"].files[f"{layout.BUNDLE_DIR}/{layout.BUNDLE_INFO}"],
            "alternatives": {name: ctx.artifact_digest(name) for name in self._alternatives(ctx)},
            "split": ctx.results["data"].files[layout.SPLIT],
            "web": profile_section(ctx.profile, "web"),
            "min_agreement": ctx.profile.benchmark.min_runtime_agreement,
            "timing": [ctx.profile.benchmark.warmup, ctx.profile.benchmark.iterations, ctx.profile.benchmark.rounds],
            "chromium": chromium_version(chromium) if chromium else None,
            "machine": machine_signature(),  # the page's latency and its default thread counts are this machine's
        }

    def run(self, ctx: BuildContext, out: Path) -> BrowserSummary:
        from edgetl.measure.browser import check_web_bundle, require_agreement

        chromium = self._chromium(ctx)
        if chromium is None:
            reason = (
                "web.chromium is off"
                if ctx.profile.web.chromium == "off"
                else "no Chromium or Chrome on this machine (install chromium, or set web.chromium or $EDGETL_CHROMIUM)"
            )
            ctx.log.warn(f"the web page was not run in a browser: {reason}")
            return BrowserSummary(checked=False, reason=reason)
        split = read_split(ctx.results["data"].path(layout.SPLIT))
        paths, labels = split.paths("val")
        results = check_web_bundle(
            ctx.results["package"].path(layout.BUNDLE_DIR),
            paths,
            labels,
            chromium,
            alternatives=self._alternatives(ctx),
            threads=ctx.profile.web.threads or None,
            # The same counts as every other latency in the report (benchmark.warmup, iterations, rounds).
            rounds=ctx.profile.benchmark.rounds,
            runs_per_round=-(-ctx.profile.benchmark.iterations // ctx.profile.benchmark.rounds),
            warmup=ctx.profile.benchmark.warmup,
            log=lambda message: ctx.log.stage(self.name, message),
        )
        write_json_atomic(out / layout.BROWSER_DIR / layout.BROWSER_RESULTS, results)
        # The same floor a converted artefact must meet before it may ship: the page is one more runtime.
        require_agreement(results, ctx.profile.benchmark.min_runtime_agreement, split.classes)
        return BrowserSummary(checked=True, **{k: v for k, v in results.items() if k != "per_image"})
