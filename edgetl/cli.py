"""Command line: a thin typer layer over the API. Expected failures are one line and an exit code.

Exit codes: 0 ok, 1 internal error, 2 bad input, 3 budget violated, 4 verification failed,
5 run directory locked, 6 regression (bench --baseline), 130 interrupted.
`--debug` (anywhere) shows tracebacks.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from edgetl import __version__, layout
from edgetl.errors import EdgeTLError
from edgetl.plan import build_plan

if TYPE_CHECKING:
    from edgetl.console import Log

app = typer.Typer(
    name="edgetl",
    help="From a folder of labelled images to a fine-tuned, quantized, benchmarked edge model.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Wide enough for the result table when stdout is a file or a CI log.
_out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

ProfileArg = Annotated[Path, typer.Argument(help="profile YAML file", show_default=False)]


OutputOption = Annotated[
    Path | None, typer.Option("--output-dir", "-o", help="run directory (overrides the profile's output_dir)")
]
ForceOption = Annotated[bool, typer.Option("--force", help="rerun every stage, ignoring cached results")]
ResumeOption = Annotated[
    bool, typer.Option("--resume", help="continue an interrupted training from its last finished epoch")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="only print the result and errors")]


class PredictFormat(str, enum.Enum):
    tsv = "tsv"
    csv = "csv"
    jsonl = "jsonl"


@app.command()
def build(
    profile: Annotated[
        Path | None, typer.Argument(help="profile YAML file (or --data instead)", show_default=False)
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="no profile file: build this image folder with a starter profile (edgetl init's)"),
    ] = None,
    target: Annotated[
        str, typer.Option("--target", help="with --data: where the model runs (edgetl targets)")
    ] = "x86-cpu",
    backbone: Annotated[
        str, typer.Option("--backbone", help="with --data: the pretrained backbone (edgetl backbones)")
    ] = "efficientnet_lite0",
    output_dir: OutputOption = None,
    force: ForceOption = False,
    resume: ResumeOption = False,
    quiet: QuietOption = False,
) -> None:
    """Fine-tune, export, quantize and benchmark as the profile says (or, with --data, as a starter profile says)."""
    from edgetl.api import build_run
    from edgetl.console import Log
    from edgetl.errors import UserInputError
    from edgetl.profile import load_profile
    from edgetl.report.compose import print_table

    if profile is None and data is None:
        raise UserInputError("missing a profile: edgetl build PROFILE, or edgetl build --data DIR (no profile file)")
    if profile is not None and data is not None:
        raise UserInputError("give a profile file or --data DIR, not both")
    if data is not None:
        from edgetl.commands.init import starter_loaded

        loaded = starter_loaded(data, target, backbone)
    else:
        assert profile is not None
        loaded = load_profile(profile)
    run = build_run(loaded, output_dir=output_dir, force=force, resume=resume, log=Log(quiet=quiet))
    if run is None:  # a torchrun rank other than 0: rank 0 reports
        return
    print_table(dict(run.report), _out)
    reused = _reused_note(run.reused_stages)
    _err.print(f"run directory: {run.run_dir} (report: {layout.REPORT_MD}){reused}; {run.seconds:.1f} s")
    if data is not None:
        _err.print(f"the profile it used: {run.profile_path} (edit it, then edgetl build it)")
    run.raise_for_budgets()


@app.command()
def init(
    data: Annotated[Path, typer.Argument(help="image folder: class folders, or train/ and val/", show_default=False)],
    target: Annotated[str, typer.Option("--target", help="where the model runs (edgetl targets)")] = "x86-cpu",
    backbone: Annotated[str, typer.Option("--backbone", help="pretrained backbone (edgetl backbones)")] = (
        "efficientnet_lite0"
    ),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="the profile file to write (default: ./<folder name>.yaml)")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="the profile's name (default: the folder's)")] = None,
) -> None:
    """Write a commented starter profile for an image folder (never over an existing file)."""
    from edgetl.commands.init import profile_name, write_starter_profile

    path = write_starter_profile(data, output or Path(f"{profile_name(data)}.yaml"), target, backbone, name)
    _plain(f"wrote {path}: check it with `edgetl validate {path}`, build it with `edgetl build {path}`")


@app.command()
def tune(
    profile: ProfileArg,
    trials: Annotated[
        int | None, typer.Option("--trials", help="total trials of the study (default: tune.trials)")
    ] = None,
    time_budget: Annotated[
        str | None, typer.Option("--time-budget", help="stop starting trials after e.g. 30m, 2h (this worker)")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option("--storage", help="study database URL (default: SQLite in <run>/tune); postgresql://... to share"),
    ] = None,
    study: Annotated[str | None, typer.Option("--study", help="study name (default: the profile's name)")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue an existing study, or join it as a worker")
    ] = False,
    final: Annotated[
        bool | None, typer.Option("--final/--no-final", help="build the pick on all of train and evaluate it on val")
    ] = None,
    heartbeat: Annotated[
        float,
        typer.Option(
            "--heartbeat",
            help="seconds between a running trial's heartbeats; a worker silent for "
            "twice this long has its trial marked failed",
        ),
    ] = 30.0,
    quiet: QuietOption = False,
) -> None:
    """Search backbone, input size, fine-tuning and quantization settings for the most accurate model that fits.

    Trials are whole builds scored on a tune holdout carved out of train (val is never seen); latency is the
    deployed artefact's, measured. Without `tune.search` edgetl's default space is searched (the backbones whose
    weights are on this machine, input size, strategy, learning rates, augmentation, epochs, calibration); the
    space is printed when the search starts and recorded in tune/trials.json. Writes <run>/tune/ and, at the end,
    builds the pick into <run> and evaluates it on val once.
    """
    from edgetl.api import tune as run_tune
    from edgetl.console import Log
    from edgetl.report.compose import print_table
    from edgetl.tuning.progress import TrialProgress

    with TrialProgress(Log(quiet=quiet), enabled=not quiet) as progress:
        result = run_tune(
            profile,
            trials=trials,
            time_budget=time_budget,
            storage=storage,
            study=study,
            resume=resume,
            final_build=final,
            heartbeat=heartbeat,
            quiet=quiet,
            on_trial=None if quiet else progress.update,  # quiet: no trial events to build
        )
    summary, pick, counts = result.summary, result.pick, result.counts
    _err.print(
        f"study {result.study}: {counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed; "
        f"results in {result.tune_dir} (pareto.md, trials.csv, best.yaml)"
    )
    if pick is not None:
        _err.print(
            f"pick: trial {pick['trial']} ({pick['accuracy']:.1%} on the tune holdout, {pick['latency_ms']:.2f} ms, "
            f"{pick['size_mb']:.2f} MB): {', '.join(f'{k}={v}' for k, v in pick['params'].items())}"
        )
    if result.interrupted:
        _err.print(f"edgetl: interrupted; finished trials are kept in {summary['storage']}; --resume continues")
        raise typer.Exit(130)
    if result.final is not None:
        print_table(dict(result.final.report), _out)
        _err.print(f"run directory: {result.final.run_dir} (the pick, evaluated on val once: {layout.REPORT_MD})")
        result.final.raise_for_budgets()


@app.command()
def train(
    profile: ProfileArg,
    output_dir: OutputOption = None,
    force: ForceOption = False,
    resume: ResumeOption = False,
    quiet: QuietOption = False,
) -> None:
    """Run only the data and fine-tune stages (works under torchrun for multi-process training)."""
    from edgetl.console import Log
    from edgetl.pipeline import build as run_build
    from edgetl.summaries import FinetuneSummary

    outcome = run_build(
        profile, output_dir=output_dir, force=force, resume=resume, until="finetune", log=Log(quiet=quiet)
    )
    if not outcome.results or "finetune" not in outcome.results or outcome.results["finetune"].files == {}:
        return  # a torchrun rank other than 0
    summary = outcome.results["finetune"].summary
    assert isinstance(summary, FinetuneSummary)
    holdout = summary.best_holdout_accuracy
    _out.print(
        f"{summary.backbone} {summary.strategy_detail}: best epoch {summary.best_epoch} of "
        f"{summary.epochs_run}" + (f", holdout accuracy {holdout:.2%}" if holdout is not None else "")
    )
    _err.print(
        f"run directory: {outcome.run_dir} (curves: {layout.TRAINING_CURVES})"
        f"{_reused_note([name for name, result in outcome.results.items() if result.skipped])}; "
        f"{outcome.seconds:.1f} s"
    )


def _reused_note(stages: Sequence[str]) -> str:
    """The stages a build found up to date, for its last line."""
    return f"; up to date: {', '.join(stages)}" if stages else ""


@app.command()
def bench(
    run_dir: Annotated[
        Path, typer.Argument(help="run directory of a finished build, or a device bundle", show_default=False)
    ],
    baseline: Annotated[
        Path | None, typer.Option("--baseline", help="report.json (or run directory) to compare against")
    ] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="write the comparison as JUnit XML here")] = None,
    accuracy_points: Annotated[
        float, typer.Option("--max-accuracy-drop", help="allowed accuracy drop, percentage points")
    ] = 1.0,
    latency_relative: Annotated[
        float, typer.Option("--max-slowdown", help="allowed latency increase, fraction (0.15 = 15%)")
    ] = 0.15,
    latency_percentile: Annotated[
        str, typer.Option("--percentile", help="latency percentile compared: p50, p90 or p99 (what reports record)")
    ] = "p50",
    size_relative: Annotated[float, typer.Option("--max-size-growth", help="allowed file growth, fraction")] = 0.05,
    throughput_relative: Annotated[
        float, typer.Option("--max-throughput-drop", help="allowed throughput drop, fraction")
    ] = 0.15,
    measure: Annotated[
        bool, typer.Option("--measure/--no-measure", help="re-measure now, or compare the run's own report")
    ] = True,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="folder for the new report")] = None,
    across_machines: Annotated[
        bool, typer.Option("--across-machines", help="compare timings even if the machines differ")
    ] = False,
    on: Annotated[
        str | None,
        typer.Option(
            "--on",
            help="measure the bundle on this device over SSH (user@host): copied there, measured by the device's "
            "own edgetl, results brought back",
        ),
    ] = None,
    remote_edgetl: Annotated[
        str, typer.Option("--remote-edgetl", help="with --on: the command that runs edgetl on the device")
    ] = "edgetl",
    ssh_option: Annotated[
        list[str] | None,
        typer.Option("--ssh-option", help="with --on: an ssh/scp -o option (Port=2222, IdentityFile=...), repeatable"),
    ] = None,
    select: Annotated[
        bool,
        typer.Option(
            "--select",
            help="bundle, on the device: also measure the bundle's candidate models and record the fastest that "
            "agrees with the reference in device.json (predict then uses it)",
        ),
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """Benchmark a finished run again; with --baseline, fail (exit 6) on an accuracy, latency or size regression."""
    from edgetl.bundle import is_bundle
    from edgetl.commands.bench_run import bench as run_bench
    from edgetl.console import Log
    from edgetl.errors import RegressionFound, UserInputError
    from edgetl.report.compose import print_table
    from edgetl.report.regression import Tolerances, counts, format_diff

    log = Log(quiet=quiet)
    if on is not None:
        if select:
            raise UserInputError("--select records the device's choice in its own copy of the bundle: run it there")
        _bench_remote(run_dir, on, remote_edgetl, ssh_option or [], baseline, output, log)
        return
    if is_bundle(run_dir):  # on the device: measure the bundle itself
        _bench_bundle(run_dir, baseline, output, log, select)
        return
    if select:
        raise UserInputError(f"{run_dir}: --select measures a device bundle's candidates; give the bundle directory")
    tolerances = Tolerances(accuracy_points, latency_relative, latency_percentile, size_relative, throughput_relative)
    outcome = run_bench(
        run_dir,
        baseline=baseline,
        tolerances=tolerances,
        junit=junit,
        measure=measure,
        output=output,
        compare_across_machines=across_machines,
        log=lambda message: log.stage("bench", message),
    )
    print_table(outcome.report, _out)
    _err.print(f"report: {outcome.report_dir / layout.REPORT_MD}" + (f"; JUnit: {junit}" if junit and baseline else ""))
    if baseline is None:
        return
    _out.print(format_diff(outcome.checks), markup=False)
    if not outcome.passed:
        failed = counts(outcome.checks)["fail"]
        raise RegressionFound(f"{failed} regression(s) against {baseline}")


def _bench_remote(
    source: Path,
    on: str,
    remote_edgetl: str,
    ssh_options: list[str],
    baseline: Path | None,
    output: Path | None,
    log: Log,
) -> None:
    from edgetl.bundle import is_bundle
    from edgetl.errors import UserInputError
    from edgetl.measure.device_bench import render
    from edgetl.measure.remote import bench_remote

    if baseline is not None:
        raise UserInputError("--on measures a bundle on a device; --baseline compares run directories")
    bundle = source if is_bundle(source) else source / layout.BUNDLE_DIR
    if not is_bundle(bundle):
        raise UserInputError(f"{source}: --on needs a device bundle (or a run directory holding one in bundle/)")
    results = bench_remote(
        bundle, on, output, remote_edgetl, ssh_options, log=lambda message: log.stage("bench", message)
    )
    _out.print(render(results), markup=False)


def _bench_bundle(bundle: Path, baseline: Path | None, output: Path | None, log: Log, select: bool = False) -> None:
    from edgetl.commands.bench_bundle import bench_bundle
    from edgetl.errors import UserInputError, VerificationError
    from edgetl.measure.device_bench import compare, render

    if baseline is not None:
        raise UserInputError(
            f"{bundle}: --baseline compares run directories; a bundle is checked against its reference"
        )
    results = bench_bundle(bundle, output=output, log=lambda message: log.stage("bench", message), select=select)  # type: ignore[attr-defined]
    _out.print(render(results), markup=False)
    failed = compare(results)
    if failed:
        raise VerificationError(f"{bundle}: {', '.join(failed)} disagree with the build machine's reference logits")


@app.command()
def validate(profile: ProfileArg) -> None:
    """Check a profile without building anything (does not import torch)."""
    from edgetl.profile import load_profile

    loaded = load_profile(profile)
    p = loaded.profile
    data = p.data.root or f"named dataset {p.data.source!r}"
    _out.print(
        f"{loaded.path}: ok\n"
        f"  name {p.name}, data {data}, backbone {p.backbone.name}, strategy {p.finetune.strategy}\n"
        f"  target {p.target}, deployed artefact {build_plan(p).deployed_artifact}, output {loaded.output_dir}"
    )


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout")] = None,
) -> None:
    """The profile's JSON Schema, for editors (`# yaml-language-server: $schema=...` at the top of a profile)."""
    import json

    from edgetl.files import write_text_atomic
    from edgetl.profile import profile_json_schema

    text = json.dumps(profile_json_schema(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(output, text)


@app.command()
def predict(
    source: Annotated[
        Path, typer.Argument(help="run directory, device bundle, .engine or edgetl .onnx file", show_default=False)
    ],
    images: Annotated[
        list[str],
        typer.Argument(help="image files, folders (every image under them) or glob patterns", show_default=False),
    ],
    artifact: Annotated[
        str | None,
        typer.Option(
            help="run dir: any artefact it holds (onnx_int8, openvino_int8, ...); bundle: model or engine "
            "(default: the deployed one)"
        ),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="labels per image")] = 1,
    output_format: Annotated[
        PredictFormat,
        typer.Option("--format", help="tsv (path, tab, 'label score, ...'), csv, or jsonl (one JSON object per line)"),
    ] = PredictFormat.tsv,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=1024, help="images per inference")] = 32,
) -> None:
    """Classify images with a built model, through the torch-free runtime; streams, so any number of images fits."""
    from edgetl.profile import IMAGE_EXTENSIONS
    from edgetl.runtime import load
    from edgetl.runtime.predictor import iter_image_paths

    predictor = load(source, artifact=artifact)
    write = _prediction_writer(output_format, top_k)
    try:
        for image, predictions in predictor.predict_stream(
            iter_image_paths(images, IMAGE_EXTENSIONS), top_k=top_k, batch_size=batch_size
        ):
            write(str(image), predictions)
    finally:
        predictor.close()


def _prediction_writer(output_format: PredictFormat, top_k: int) -> Callable[[str, list[Any]], None]:
    """One output row per image, escaped so that any file name stays one row of its format."""
    import csv
    import json

    if output_format is PredictFormat.jsonl:

        def jsonl(image: str, predictions: list[Any]) -> None:
            rows = [{"label": p.label, "index": p.index, "score": round(p.score, 6)} for p in predictions]
            sys.stdout.write(json.dumps({"image": image, "predictions": rows}, ensure_ascii=False) + "\n")

        return jsonl
    if output_format is PredictFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        header = ["image"] + [f"{what}_{rank}" for rank in range(1, top_k + 1) for what in ("label", "score")]
        writer.writerow(header)

        def csv_row(image: str, predictions: list[Any]) -> None:
            writer.writerow([image] + [v for p in predictions for v in (p.label, f"{p.score:.6f}")])

        return csv_row

    def tsv(image: str, predictions: list[Any]) -> None:
        labels = ", ".join(f"{p.label} {p.score:.3f}" for p in predictions)
        sys.stdout.write(f"{_tsv_escape(image)}\t{_tsv_escape(labels)}\n")  # not rich: it would expand the tab

    return tsv


def _tsv_escape(text: str) -> str:
    """Backslash escapes for the characters that would break a tab-separated row (as PostgreSQL's text COPY)."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


@app.command()
def backbones() -> None:
    """List the registered backbones: cost, preprocessing, and whether their weights are on this machine."""
    from edgetl.backbones import list_backbones
    from edgetl.backbones.weights import find_local_weights

    for spec in list_backbones():
        pre = spec.pretrained.preprocessing
        local = find_local_weights(spec)
        source = spec.pretrained.package or spec.pretrained.url
        weights = f"weights: {local}" if local else f"weights not on this machine (from {source})"
        _out.print(
            f"{spec.name:<20} {spec.params_millions:5.2f} M params {spec.macs_millions:7.1f} M MACs, "
            f"input {pre.crop} (resize {pre.resize}, {pre.interpolation}); {spec.description}; {weights}"
        )


@app.command()
def targets(
    name: Annotated[str | None, typer.Argument(help="show one target in detail", show_default=False)] = None,
) -> None:
    """List deployment targets: runtime, precisions, build memory and what happens on the device."""
    from edgetl.targets import get_target, target_names

    for target_name in [name] if name else target_names():
        target = get_target(target_name)
        _plain(
            f"{target.name:<18} {target.runtime:<15} {'/'.join(target.precisions):<15} {target.description} "
            f"[{target.verified.short}]"
        )
        if name is None:
            continue
        _plain(f"  verified: {target.verified.detail}")
        _plain(f"  software: {target.software}")
        if target.device_memory_mb:
            _plain(f"  device memory: {target.device_memory_mb} MB")
        if target.engine is not None:
            e = target.engine
            _plain(
                f"  engine: TensorRT {e.tensorrt}, workspace {e.workspace_mb} MB, max batch {e.max_batch}, "
                f"DLA cores {e.dla_cores}; built {'on the device' if target.build_on_device else 'where a GPU is'}"
            )
        for step, text in enumerate(target.on_device, 1):
            _plain(f"  on the device {step}. {text}")
        if target.notes:
            _plain(f"  note: {target.notes}")


def _plain(text: str) -> None:
    """Print text as it is: "pip install 'edgetl[litert]'" must not be read as Rich markup."""
    _out.print(text, markup=False)


engine_app = typer.Typer(help="TensorRT engines from device bundles (needs TensorRT and pycuda).", no_args_is_help=True)
app.add_typer(engine_app, name="engine")


@engine_app.command("build")
def engine_build(
    bundle: Annotated[Path, typer.Argument(help="device bundle directory (<run>/bundle)", show_default=False)],
    workspace_mb: Annotated[
        int | None, typer.Option("--workspace-mb", min=16, help="override the builder workspace limit")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="rebuild even if the engine exists")] = False,
) -> None:
    """Build the bundle's TensorRT engine on this device and verify it against the reference logits."""
    from edgetl.bundle import build_engine_in_bundle

    result = build_engine_in_bundle(bundle, log=_out.print, workspace_mb=workspace_mb, force=force)
    _out.print(f"ok: {result['agreement']:.1f}% agreement on {result['images']} reference images")


@engine_app.command("verify")
def engine_verify(
    bundle: Annotated[Path, typer.Argument(help="device bundle directory with a built engine", show_default=False)],
) -> None:
    """Check an existing engine against the bundle's reference images (exit 4 when it disagrees)."""
    from edgetl.bundle import read_bundle, verify_engine

    opened = read_bundle(bundle)
    verify_engine(opened, opened.engine_path, log=_out.print)


bundle_app = typer.Typer(help="Device bundles: check a port of the model against the bundle.", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")


@bundle_app.command("verify")
def bundle_verify(
    bundle: Annotated[Path, typer.Argument(help="device bundle directory (<run>/bundle)", show_default=False)],
    inputs: Annotated[
        Path | None,
        typer.Option("--inputs", help="the port's preprocessed reference images (.npy or .json), image order"),
    ] = None,
    logits: Annotated[Path | None, typer.Option("--logits", help="the port's logits (.npy or .json)")] = None,
    logits_from: Annotated[
        str,
        typer.Option(
            "--logits-from",
            help="reference-inputs: the port ran the model on reference/inputs.npy (held to the logit tolerance); "
            "own-inputs: on its own preprocessing (held to top-1 agreement)",
        ),
    ] = "reference-inputs",
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the comparison as JSON here")] = None,
) -> None:
    """Compare a port's tensors and logits with the bundle's references (exit 4 when they differ).

    Without --inputs and --logits, this machine's edgetl runtime is the port: run it on the device.
    """
    from edgetl.errors import UserInputError
    from edgetl.files import write_json_atomic
    from edgetl.port_check import check, describe, verify_here, verify_port

    if logits_from not in ("reference-inputs", "own-inputs"):
        raise UserInputError(f"--logits-from {logits_from!r}: expected reference-inputs or own-inputs")
    if inputs is None and logits is None:
        result = verify_here(bundle)
    else:
        result = verify_port(bundle, inputs, logits, logits_from)  # type: ignore[arg-type]
    for line in describe(result):
        _plain(line)
    if json_out is not None:
        write_json_atomic(json_out, result)
    check(result)


@app.command()
def serve(
    bundle: Annotated[Path, typer.Argument(help="a web target's bundle directory (<run>/bundle)", show_default=False)],
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="0: any free port")] = 8000,
    host: Annotated[
        str, typer.Option("--host", help="address to listen on; 0.0.0.0 lets other devices on the network open it")
    ] = "127.0.0.1",
) -> None:
    """Serve a web bundle's page with the headers multithreaded WebAssembly needs (Ctrl-C stops)."""
    from edgetl.bundle import read_bundle
    from edgetl.errors import UserInputError
    from edgetl.measure.browser import BundleServer

    info = read_bundle(bundle).info
    if not info.get("web"):
        raise UserInputError(
            f"{bundle}: this bundle has no web page (target {info['target']['name']}); build it with target: web"
        )
    try:
        server = BundleServer(bundle, port=port, host=host)
    except OSError as error:
        raise UserInputError(f"--host {host} --port {port}: cannot listen there ({error.strerror})") from None
    _plain(f"serving {bundle} at {server.url}/{info['web']['page']} (cross-origin isolated; Ctrl-C stops)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        _plain("browsers allow the camera only on https or localhost: from another device, pick image files")
    server.serve_forever()


data_app = typer.Typer(help="Inspect image folders before building.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    source: Annotated[
        Path,
        typer.Argument(
            help="dataset folder (train/ and val/, or class folders), or a profile YAML", show_default=False
        ),
    ],
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the full check as JSON here")] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="exit 2 when any file is skipped or any warning is found")
    ] = False,
    min_size: Annotated[int, typer.Option("--min-size", min=1, help="smallest usable image side, pixels")] = 16,
    keep_placeholders: Annotated[
        bool, typer.Option("--keep-placeholders", help="do not skip 'image not available' placeholders")
    ] = False,
) -> None:
    """List every problem file with its reason, class counts, imbalance and duplicates (train/val leakage).

    Exit 2 when the data cannot be trained on (fewer than two classes, an empty class, a val class
    unknown to train). Given a profile, the profile's data settings are used, exactly as a build would.
    """
    from edgetl.data.report import check_dataset, check_profile_data, locate_dataset, render_check
    from edgetl.errors import DataError
    from edgetl.files import write_json_atomic
    from edgetl.profile import IMAGE_EXTENSIONS

    root = source
    if source.suffix.lower() in (".yaml", ".yml") and source.is_file():
        from edgetl.profile import load_profile

        loaded = load_profile(source)
        root = locate_dataset(loaded.profile.data, loaded.path, log=lambda message: _err.print(message, markup=False))
        check = check_profile_data(loaded.profile.data, root)
    else:
        check = check_dataset(
            root, extensions=IMAGE_EXTENSIONS, min_size=min_size, skip_placeholders=not keep_placeholders
        )
    for line in render_check(check):
        _out.print(line, markup=False)
    if json_out is not None:
        write_json_atomic(json_out, check.to_dict())
    if strict and check.problems:
        raise DataError(f"{root}: {len(check.problems)} problem(s) found (--strict)")


@app.command()
def version() -> None:
    """Print the edgetl version."""
    _out.print(f"edgetl {__version__}")


def _is_usage_error(error: Exception) -> bool:
    """Click's ClickException interface (typer vendors click in some versions, so match by shape)."""
    return callable(getattr(error, "show", None)) and isinstance(getattr(error, "exit_code", None), int)


def _usage_message(error: Exception) -> str:
    """Click's message, plus where help is, on one line ('Usage: ...' blocks are noise in CI logs)."""
    message = error.format_message() if hasattr(error, "format_message") else str(error)  # type: ignore[attr-defined]
    message = " ".join(message.split())
    context = getattr(error, "ctx", None)
    command = getattr(context, "command_path", None) or "edgetl"
    return f"{message} (see '{command} --help')"


def _environment_message(error: OSError | RecursionError) -> str:
    if isinstance(error, RecursionError):
        return "an input file is nested too deeply to read (JSON or YAML thousands of levels deep?)"
    where = " -> ".join(str(name) for name in (error.filename, error.filename2) if name)
    reason = error.strerror or str(error) or type(error).__name__
    return f"{where}: {reason}" if where else reason


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        # Non-standalone typer returns the exit code of typer.Exit, and turns Ctrl-C into Exit(130).
        code = app(args=args, prog_name="edgetl", standalone_mode=False)
    except typer.Exit as done:
        code = done.exit_code
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except EdgeTLError as error:
        if debug:
            _err.print_exception()
        for line in str(error).splitlines() or [error.__class__.__name__]:
            _err.print(f"edgetl: error: {line}", markup=False)
        sys.exit(error.exit_code)
    except (OSError, RecursionError) as error:
        # The file system or the input's shape, not a bug: a full disk, an unwritable --json, a symlink loop,
        # a cache path that is a file, a JSON file nested thousands deep. One line naming the path.
        if debug:
            raise
        _err.print(f"edgetl: error: {_environment_message(error)}", markup=False)
        sys.exit(2)
    except Exception as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # `edgetl` or `edgetl data` alone: show the help
            _out.print(error.ctx.get_help(), markup=False)  # type: ignore[attr-defined]
            sys.exit(2)
        if _is_usage_error(error):  # typer/click usage errors: one line too, exit code 2
            _err.print(f"edgetl: error: {_usage_message(error)}", markup=False)
            sys.exit(getattr(error, "exit_code", 2))
        # A bug: say so in one line unless asked for the traceback.
        if debug:
            raise
        _err.print(
            f"edgetl: internal error: {error.__class__.__name__}: {error} (rerun with --debug for the traceback)",
            markup=False,
        )
        sys.exit(1)
    if code == 130:
        _err.print("edgetl: interrupted; finished stages are cached; rerun with --resume to continue training")
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
