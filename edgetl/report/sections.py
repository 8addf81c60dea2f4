"""Markdown sections of report.md that explain the numbers: statistics, classes, performance, int8.

Each function takes the report dict and returns lines; none of them computes anything new, so
report.md never says more than report.json holds.
"""

from __future__ import annotations

from typing import Any

from edgetl.targets import get_target, target_names

_MAX_CLASS_ROWS = 20


_AUTO_REDUCE_RANGE = " (reduce_range auto: this CPU has no VNNI)"


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:.1f}"


def statistics_lines(report: dict[str, Any]) -> list[str]:
    baseline = report["baseline"]
    images = report["eval"]["images"]
    lines = [
        "",
        "## Is the difference real?",
        "",
        f"On {images} images one image is {100 / images:.2f} points, so every accuracy comes with a 95% bootstrap "
        f"confidence interval; each artefact is compared with `{baseline}` on the same images by a paired bootstrap "
        "interval of the accuracy difference and an exact McNemar test on the images where exactly one of the two "
        "is right. A high p-value means no evidence of a difference, not proof of equality: read it with the interval.",
        "",
        f"| artefact | top-1 (95% CI) | difference vs {baseline}, points (95% CI) | only {baseline} right | "
        "only artefact right | McNemar p |",
        "|---|---|---|---|---|---|",
    ]
    for name, a in report["artifacts"].items():
        s = a.get("statistics")
        if not s:
            continue
        ci, diff, test = s["accuracy"], s["difference"], s["mcnemar"]
        lines.append(
            f"| {name} | {ci['accuracy']:.2%} ({ci['low']:.2%} to {ci['high']:.2%}) | "
            f"{diff['difference_points']:+.2f} ({diff['low_points']:+.2f} to {diff['high_points']:+.2f}) | "
            f"{test['a_only_correct']} | {test['b_only_correct']} | {test['p_value']:.3g} |"
        )
    deployed = report["artifacts"].get(report["deployed_artifact"], {}).get("statistics")
    if deployed and report["deployed_artifact"] != baseline:
        lines += ["", f"- {report['deployed_artifact']} vs {baseline}: {deployed['mcnemar']['interpretation']}"]
    return lines


def per_class_lines(report: dict[str, Any]) -> list[str]:
    names = [n for n, a in report["artifacts"].items() if a.get("per_class")]
    if not names:
        return []
    classes = report["eval"]["classes"]
    deployed = report["deployed_artifact"]
    lines = ["", "## Per class", ""]
    shown = classes
    if len(classes) > _MAX_CLASS_ROWS:
        per_class = report["artifacts"][deployed]["per_class"]
        shown = sorted(classes, key=lambda c: per_class[c]["accuracy"] if per_class[c]["accuracy"] is not None else 2)
        shown = shown[:_MAX_CLASS_ROWS]
        lines.append(f"The {_MAX_CLASS_ROWS} classes where {deployed} is least accurate (all in report.json).")
        lines.append("")
    lines += [
        "| class | images | " + " | ".join(f"{n} recall" for n in names) + f" | {deployed} precision |",
        "|---|---|" + "---|" * (len(names) + 1),
    ]
    for cls in shown:
        first = report["artifacts"][names[0]]["per_class"][cls]
        cells = []
        for name in names:
            value = report["artifacts"][name]["per_class"][cls]["accuracy"]
            cells.append("n/a" if value is None else f"{value:.1%}")
        precision = report["artifacts"][deployed]["per_class"][cls].get("precision") if deployed in names else None
        lines.append(
            f"| {cls} | {first['total']} | "
            + " | ".join(cells)
            + f" | {'n/a' if precision is None else f'{precision:.1%}'} |"
        )
    matrix = report["artifacts"].get(deployed, {}).get("confusion_matrix")
    if matrix and len(classes) <= _MAX_CLASS_ROWS:
        lines += [
            "",
            f"Confusion matrix of {deployed} (rows: true class, columns: predicted):",
            "",
            "| | " + " | ".join(classes) + " |",
            "|---|" + "---|" * len(classes),
        ]
        for cls, row in zip(classes, matrix, strict=True):
            lines.append(f"| {cls} | " + " | ".join(str(v) for v in row) + " |")
    return lines


def performance_lines(report: dict[str, Any]) -> list[str]:
    settings = report["settings"]
    lines = [
        "",
        "## Latency, throughput, memory, compute",
        "",
        f"Batch 1, {settings['threads']} thread(s), {settings['warmup']} warm-up runs then {settings['iterations']} "
        f"timed runs per artefact, interleaved across artefacts in {settings['rounds']} rounds. Everything below is "
        "measured on this machine.",
        "",
        "| artefact | runtime / providers | p50 | p90 | p99 | mean ± std | min / max | peak RSS MB (model) | "
        "MMACs | params M | GEMM-peak share |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, a in report["artifacts"].items():
        lat = a["latency_ms"]
        execution = a.get("execution") or {}
        providers = ", ".join(execution.get("providers") or []) or a["runtime"]
        memory = a.get("memory") or {}
        compute = a.get("compute") or {}
        utilization = compute.get("utilization")
        cells = [
            name,
            f"{execution.get('runtime', a['runtime'])} {execution.get('version', '')} ({providers})",
            f"{lat['p50']:.2f}",
            f"{lat['p90']:.2f}",
            f"{lat['p99']:.2f}",
            f"{lat['mean']:.2f} ± {lat['std']:.2f}",
            f"{lat['min']:.2f} / {lat['max']:.2f}",
            f"{_mb(memory.get('peak_rss_bytes'))} ({_mb(memory.get('model_rss_bytes'))})",
            f"{compute['macs'] / 1e6:.1f}" if compute.get("macs") else "n/a",
            f"{compute['parameters'] / 1e6:.2f}" if compute.get("parameters") else "n/a",
            f"{utilization['fraction']:.1%} of {utilization['peak_precision']}" if utilization else "n/a",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    sweep_sizes = sorted({item["batch"] for a in report["artifacts"].values() for item in a.get("batch_sweep") or []})
    if sweep_sizes:
        lines += [
            "",
            "Throughput sweep, images per second (median of "
            f"{settings.get('throughput_iterations', 'n/a')} runs per batch size):",
            "",
            "| artefact | " + " | ".join(f"batch {b}" for b in sweep_sizes) + " |",
            "|---|" + "---|" * len(sweep_sizes),
        ]
        for name, a in report["artifacts"].items():
            by_batch = {item["batch"]: item["images_per_second"] for item in a.get("batch_sweep") or []}
            cells = [f"{by_batch[b]:.1f}" if b in by_batch else "n/a" for b in sweep_sizes]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    peaks = report.get("peaks") or {}
    if peaks:
        lines += ["", "How the compute peak is derived (measured, not from a datasheet):", ""]
        lines += [f"- {p}: {peak['gmacs_per_second']:.1f} GMAC/s; {peak['method']}" for p, peak in peaks.items()]
        lines.append(
            "- MACs are counted on each shipped ONNX file at batch 1; share = MACs / p50 latency / peak. "
            "fp16 on a CPU is compared with the fp32 peak."
        )
    memory_method = next((a["memory"].get("method") for a in report["artifacts"].values() if a.get("memory")), None)
    if memory_method:
        lines.append(f"- memory: {memory_method}")
    return lines


def quantization_lines(report: dict[str, Any]) -> list[str]:
    quant = report.get("quantization")
    lines: list[str] = []
    if quant:
        s = quant["settings"]
        calibration = quant.get("calibration") or {}
        lines += [
            "",
            "## Quantization",
            "",
            f"- static int8 QDQ, {s['calibration_method']} calibration on {quant['calibration_images']} train images, "
            f"activations {s['activation_type']}, weights {s['weight_type']} "
            f"{'per-channel' if s['per_channel'] else 'per-tensor'}"
            f"{' with reduce_range (7-bit weights)' if quant.get('reduce_range', s['reduce_range']) is True else ''}"
            f"{_AUTO_REDUCE_RANGE if s['reduce_range'] == 'auto' and quant.get('reduce_range') else ''}"
            f"{'; symmetric int8 for TensorRT, Q/DQ on compute inputs only' if quant.get('symmetric') else ''}",
        ]
        if calibration and calibration.get("method") != "minmax":
            lines.append(
                f"- {calibration['method']} ({calibration.get('settings')}) clipped "
                f"{calibration['tensors_clipped']} of "
                f"{calibration['tensors']} activation ranges, median {calibration['median_clipped_fraction']:.0%} of "
                "the observed range (verified per tensor in optimize/calibration.json; not a silent MinMax)"
            )
        tuning = quant.get("tuning")
        if tuning:
            lines.append(
                f"- on {tuning['images']} tuning images ({tuning['source']}): accuracy drop "
                f"{tuning['accuracy_drop_points']:.2f} points vs fp32 (budget {tuning['max_accuracy_drop']:g}), "
                f"agreement {tuning['agreement']:.2%}"
                + (f" (minimum {tuning['min_agreement']:g}%)" if tuning.get("min_agreement") is not None else "")
                + (
                    f", logit SQNR {tuning['logit_sqnr_db']:.1f} dB"
                    + (f" (minimum {tuning['min_logit_sqnr_db']:g})" if tuning.get("min_logit_sqnr_db") else "")
                    if tuning.get("logit_sqnr_db") is not None
                    else ""
                )
            )
        lines.append(f"- kept in float: {', '.join(quant.get('float_nodes') or []) or 'nothing'}")
        for key, label in (("adaround", "AdaRound"), ("bias_correction", "bias correction")):
            step = quant.get(key)
            if step:
                lines.append(f"- {label}: {step['why']}")
        qat = quant.get("qat")
        if qat and qat.get("ran"):
            lines.append(f"- quantization-aware training: {qat['why']}")
        aware = quant.get("accuracy_aware")
        if aware and aware["triggered"]:
            cost = aware.get("cost") or {}
            lines.append(
                f"- accuracy-aware fallback: all-int8 dropped {aware['initial_drop_points']:.2f} points on the tuning "
                f"images; kept {len(aware['added_float_nodes'])} most sensitive node(s) in float "
                f"({', '.join(aware['added_float_nodes'])}) after {aware['attempts']} attempts; "
                + ("budget restored" if aware["within_budget"] else "**budget not restored**")
                + (
                    f"; speed cost: p50 {cost['all_int8_p50_ms']:.2f} ms -> {cost['fallback_p50_ms']:.2f} ms "
                    f"({cost['slowdown']:.2f}x"
                    + (f"; {cost['speedup_vs_fp32']:.2f}x fp32 speed" if "speedup_vs_fp32" in cost else "")
                    + f", {cost['method']})"
                    if cost
                    else ""
                )
            )
        elif aware:
            lines.append("- accuracy-aware fallback: not needed (int8 met the budget on the tuning images)")
    fp16 = report.get("fp16")
    if fp16:
        lines += [
            "",
            f"- fp16 ONNX for GPU targets: {fp16['size_bytes'] / 1e6:.2f} MB ({fp16['size_ratio']:.2f}x fp32), fp32 "
            "inputs/outputs; its CPU latency above says nothing about a GPU (ONNX Runtime CPU runs fp16 via casts)",
        ]
    return lines


def _pixels_model_lines(pixels: dict[str, Any]) -> list[str]:
    """The in-graph preprocessing model: what it agrees with and what it costs, as measured in the package stage."""
    if not pixels:
        return []
    if not pixels.get("made"):
        return [f"- in-graph preprocessing model: not made ({pixels.get('reason')})"]
    measured, latency = pixels["measured"], pixels["measured"].get("latency") or {}
    cost = (
        f"; batch 1 on one {latency['image_size'][0]}x{latency['image_size'][1]} val image: "
        f"{latency['pixels_model_ms']:.2f} ms vs {latency['model_ms']:.2f} ms for the model on its tensor "
        f"(+{latency['added_ms']:.2f} ms; the Python preprocessing it replaces takes "
        f"{latency['python_preprocessing_ms']:.2f} ms), {latency['cpu']}, {latency['threads']} thread(s), measured"
        if latency
        else ""
    )
    return [
        f"- in-graph preprocessing model `bundle/model_pixels.onnx` ({pixels['form']}, uint8 pixels in): top-1 "
        f"agreement with the PIL path {measured['agreement']}/{measured['images']} val images, max |logit diff| "
        f"{measured['max_abs_logit_diff']:.3g}, {measured['correct']}/{measured['images']} correct{cost}"
    ]


def browser_lines(report: dict[str, Any]) -> list[str]:
    """The web bundle's own page in headless Chromium on the build machine: agreement with predict, latency."""
    measured = report.get("browser")
    if not measured:
        return []
    lines = ["", "## Measured in the browser", ""]
    if not measured.get("checked"):
        return [*lines, f"The page was not run in a browser: {measured.get('reason')}."]
    machine = measured.get("machine") or {}
    lines += [
        f"The bundle's page (`bundle/web/index.html`) in headless {measured['browser']} on the build machine "
        f"({machine.get('cpu', 'unknown CPU')}), onnxruntime-web WebAssembly"
        + (", cross-origin isolated" if measured["cross_origin_isolated"] else ", not cross-origin isolated (1 thread)")
        + ". This is the build machine's browser, not the user's device.",
        "",
        f"- labels: the page agrees with `edgetl predict` on {measured['agreement']}/{measured['images']} val images "
        f"({measured['agreement_percent']:.1f}%); max |logit diff| {measured['max_abs_logit_diff']:.3g} (the page's "
        f"in-graph resize vs the PIL path); {measured['correct']}/{measured['images']} correct "
        f"(predict: {measured['predict_correct']})",
    ]
    for case in measured.get("disagreements") or []:
        lines.append(
            f"  - {case['image']}: page {case['page']} (margin {case['page_margin']:.3g}), predict {case['predict']} "
            f"(margin {case['predict_margin']:.3g})"
        )
    end = measured.get("end_to_end") or {}
    if end.get("p50_ms") is not None:
        lines.append(
            f"- decode + classify one val image in the page: p50 {end['p50_ms']:.1f} ms ({end['threads']} thread(s))"
        )
    lines += [
        "",
        "| model | shipped | WASM threads | p50 ms | p90 ms | model download |",
        "|---|---|---|---|---|---|",
    ]
    for row in measured.get("latency") or []:
        lines.append(
            f"| {row['artifact']} | {'yes' if row['shipped'] else 'no'} | {row['threads']} | {row['p50_ms']:.2f} | "
            f"{row['p90_ms']:.2f} | {row['model_bytes'] / 1e6:.2f} MB |"
        )
    lines += ["", f"Method: {measured['method']}."]
    return lines


def on_device_lines(report: dict[str, Any]) -> list[str]:
    """The bundle measured on the device itself (profile `on_device:`): its figures, labelled with the device."""
    measured = report.get("on_device")
    if not measured:
        return []
    machine = measured.get("machine") or {}
    lines = [
        "",
        f"## Measured on the device: `{measured['ssh']}`",
        "",
        f"{machine.get('cpu', 'unknown CPU')} ({machine.get('architecture', '?')}), {machine.get('usable_cpus', '?')} "
        f"CPUs, {machine.get('os', '?')}: the bundle copied there and measured by its own `edgetl bench` (reference "
        f"images, batch 1). These are the device's latencies; the tables above are the build machine's. Details: "
        f"`{measured['bench']}`.",
        "",
        "| model | p50 ms on the device | p90 ms | agreement with the build machine's reference |",
        "|---|---|---|---|",
    ]
    for name, entry in measured["artifacts"].items():
        verdict = "ok" if entry["passed"] else "FAIL"
        lines.append(
            f"| {name} | {entry['p50_ms']:.2f} | {entry['p90_ms']:.2f} | {entry['agreement']:.1f}% {verdict} |"
        )
    return lines


def deployment_lines(report: dict[str, Any]) -> list[str]:
    """Where the shipped model goes: the bundle, the engine (or why it was not built), what the CPU numbers mean."""
    package = report.get("package")
    if not package:
        return []
    lines = [
        "",
        "## Deployment",
        "",
        f"- target `{package['target']}`; device bundle `{package['bundle']}/` ships `{package['artifact']}` with its "
        "labels, preprocessing and reference logits",
    ]
    decision = report.get("deployment")
    if decision:
        lines.append(f"- why `{decision['artifact']}` ships ({decision['mode']}): {decision['reason']}")
        for candidate in decision.get("candidates") or []:
            agreement = candidate.get("runtime_agreement")
            same = f", {agreement['percent']:.1f} % agreement with {agreement['with']}" if agreement else ""
            verdict = "passes" if candidate["passed"] else "fails: " + "; ".join(candidate["failed"])
            lines.append(
                f"  - `{candidate['artifact']}`: p50 {candidate['p50_ms']:.3f} ms, top-1 {candidate['accuracy']:.1%}"
                f"{same}; {verdict}"
            )
    device_candidates = (decision or {}).get("device_candidates") or []
    if len(device_candidates) > 1:
        ranking = ", ".join(f"`{c['artifact']}` {c['p50_ms']:.3f} ms" for c in device_candidates)
        lines.append(
            f"- the bundle also carries the other models that pass the checks, ranked by **this build machine** "
            f"({report.get('machine', {}).get('cpu', 'its CPU')}): {ranking}. That ranking is a guess for "
            f"`{package['target']}`: run `edgetl bench <bundle> --select` on the device to measure them there and "
            "record its own choice"
        )
    for name, conversion in (report.get("conversions") or {}).items():
        parity = conversion.get("parity")
        measured = (
            f"; top-1 agreement {parity['top1_agreement']:.0%} with {parity['against']} on {parity['images']} val "
            f"images, max |logit diff| {parity['max_abs_logit_diff']:.2e}"
            if parity
            else ""
        )
        lines.append(f"- `{name}` converted from `{conversion['from']}` by {conversion['converter']}{measured}")
    lines += _pixels_model_lines(package.get("pixels_model") or {})
    engine = package.get("engine")
    if engine:
        check = engine["verification"]
        lines.append(
            f"- TensorRT engine `{engine['file']}` built here and verified: {check['agreement']:.1f}% agreement with "
            f"ONNX Runtime on {check['images']} reference images"
        )
    elif package.get("engine_not_built"):
        lines.append(f"- TensorRT engine not built: {package['engine_not_built']}")
    target = get_target(report["target"]) if report["target"] in target_names() else None
    if target is not None and not target.verified_here and not engine:
        lines.append(
            f"- accuracy above is what the shipped model computes ({target.runtime} on this machine); latency above "
            "is this build machine's, not the device's: run `edgetl bench <bundle>` on the device"
        )
    return lines


def data_lines(report: dict[str, Any]) -> list[str]:
    """What was trained and evaluated on, and what was left out: the numbers above depend on it."""
    data = report.get("data")
    if not data:
        return []
    counts = data["counts"]
    lines = [
        "",
        "## Data",
        "",
        f"- {len(data['classes'])} classes from `{data['root']}`: train {counts['train']}, holdout "
        f"{counts['holdout']} (model selection), val {counts['val']} ({data['val_source']}); calibration "
        "images come from train, never from val",
        f"- {data['skipped_files']} file(s) skipped, {data['warnings']} warning(s) (duplicates, leakage, "
        "imbalance): every one with its reason in `data/check.json`",
    ]
    if data.get("imbalance") is not None:
        lines.append(f"- class imbalance (largest / smallest train class): {data['imbalance']:.2f}")
    return lines


def tuning_lines(report: dict[str, Any]) -> list[str]:
    """`edgetl tune`'s search, when this build is its final pick: the front, the pick, where the files are."""
    tuning = report.get("tuning")
    if not tuning:
        return []
    counts = tuning["trials"]
    files = tuning["files"]
    pick = tuning["pick"]
    lines = [
        "",
        "## Tuning",
        "",
        f"This model is `edgetl tune`'s pick from study `{tuning['study']}`: {counts['complete']} trials completed, "
        f"{counts['pruned']} pruned, {counts['failed']} failed; objectives {', '.join(tuning['objectives'])}, "
        f"scored on a tune holdout ({tuning['holdout']}); latency {tuning['latency_source']}.",
        f"The search never saw val: the pick (trial {pick['trial']}) was rebuilt on the whole train split and "
        "evaluated on val **once**, in this report.",
        "",
        "| trial | " + " | ".join(tuning["front_columns"]) + " | settings | profile |",
        "|---|" + "---|" * len(tuning["front_columns"]) + "---|---|",
    ]
    if tuning.get("confirmation"):
        tied = ", ".join(f"trial {trial}: {text}" for trial, text in tuning["confirmation"].items())
        lines[5:5] = [
            f"Trials tied for the best holdout accuracy were rebuilt on a second holdout fold ({tied}); the pick is "
            "the fastest within one image of the best on both folds together."
        ]
    if tuning.get("holdout_limit"):
        after = 6 if tuning.get("confirmation") else 5
        lines[after:after] = ["", f"**What the holdout cannot tell.** {tuning['holdout_limit']}"]
    for point in tuning["front"]:
        marker = " (pick)" if point["trial"] == pick["trial"] else ""
        cells = " | ".join(point["cells"])
        lines.append(
            f"| {point['trial']}{marker} | {cells} | {point['settings']} | [{point['profile']}]({point['profile']}) |"
        )
    lines += [
        "",
        f"Every trial: [{files['trials_csv']}]({files['trials_csv']}), "
        f"[{files['trials_json']}]({files['trials_json']}); the front: [{files['pareto_md']}]({files['pareto_md']}).",
        "",
        f"![Pareto front]({files['pareto_png']})",
    ]
    return lines
