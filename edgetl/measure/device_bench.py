"""How a bundle measured on a device reads: `bench.md` from `bench.json`, and which models failed their check.

Shared by `edgetl bench BUNDLE` on the device and by `bench --on` / the device stage, which bring the
device's bench.json back over SSH.
"""

from __future__ import annotations

from typing import Any

from edgetl import layout


def render(results: dict[str, Any]) -> str:
    machine = results["machine"]
    where = f"`{results['measured_on']['ssh']}`" if "measured_on" in results else "this device"
    lines = [
        f"# {results['bundle']['name']} on {where} ({results['bundle']['target']} bundle)",
        "",
        f"{machine['cpu']}, {machine['usable_cpus']} CPUs, {machine['os']}. "
        f"{results['eval']['images']} reference images (a smoke test of accuracy, not an evaluation).",
        "",
        "| model | runtime | correct | agreement with build-machine reference | p50 ms | p90 ms | p99 ms | "
        "img/s (largest batch) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, a in results["artifacts"].items():
        latency, sweep = a["latency_ms"], a["batch_sweep"]
        rate = f"{sweep[-1]['images_per_second']:.1f} @ {sweep[-1]['batch']}" if sweep else "-"
        check = a["reference_check"]
        lines.append(
            f"| {name} | {a['execution']['runtime']} {a['execution']['version']} | {a['correct']}/{a['total']} | "
            f"{check['agreement']:.1f}% {'ok' if check['passed'] else 'FAIL'} | {latency['p50']:.2f} | "
            f"{latency['p90']:.2f} | {latency['p99']:.2f} | {rate} |"
        )
    selection = results.get("selection")
    if selection:
        lines += [
            "",
            f"**Chosen on this device: {selection['chosen']}** ({selection['reason']}); recorded in "
            f"`{layout.BUNDLE_DEVICE_CHOICE}`, which `edgetl predict` and `edgetl.runtime.load` follow.",
        ]
        for name, why in selection["not_measured"].items():
            lines.append(f"- {name} not measured: {why}")
    return "\n".join(lines) + "\n"


def compare(results: dict[str, Any]) -> list[str]:
    """Names of the models whose predictions disagree with the reference more than allowed.

    A candidate measured by `--select` that disagrees is simply not chosen; the bundle's own model (or
    its engine) disagreeing is a failure.
    """
    shipped = results["bundle"]["model"]
    candidates = {e["artifact"] for e in results.get("selection", {}).get("ranking_here", [])} - {shipped}
    return [
        name
        for name, a in results["artifacts"].items()
        if not a["reference_check"]["passed"] and name not in candidates
    ]
