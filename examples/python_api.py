# %% [markdown]
# # edgetl from Python
#
# Build, inspect and use an edge model from a script or a notebook. This file is a
# [jupytext](https://jupytext.readthedocs.io) "percent" script: run it with
# `python examples/python_api.py IMAGE_FOLDER`, or open it as a notebook with `jupytext --to notebook`.
# The image folder holds one subfolder per class (or `train/` and `val/` with class folders inside).
# The test suite runs this file on generated images, so what it shows works.

# %%
import sys
from pathlib import Path

import edgetl

data = Path(sys.argv[1] if len(sys.argv) > 1 else "my-images")
output = Path(sys.argv[2] if len(sys.argv) > 2 else "runs/python-api")

# %% [markdown]
# ## A profile in code
# The same fields as a profile YAML file (`edgetl schema` lists them all). Anything left out keeps
# edgetl's default; a mapping or a path to a YAML file works as well as an `edgetl.Profile`.

# %%
profile = edgetl.Profile(
    name="python-api",
    data={"root": data},
    backbone={"name": "efficientnet_lite0"},
    finetune={"strategy": "feature_extract", "epochs": 5},
    target="x86-cpu",
    budgets={"max_accuracy_drop": 1.0},
)

# %% [markdown]
# ## Build
# Fine-tune, export to ONNX, quantize to int8 and benchmark every artefact on the val images.
# Keyword arguments override profile sections, e.g. `edgetl.build("profile.yaml", finetune={"epochs": 3})`.
# `on_progress` receives every stage line (here: only the stage names, to keep the output short).

# %%
stages_seen: list[str] = []


def on_progress(event: edgetl.Progress) -> None:
    if event.kind == "stage" and event.stage not in stages_seen:
        stages_seen.append(event.stage or "")


run = edgetl.build(profile, output_dir=output, quiet=True, on_progress=on_progress)
print("stages:", " -> ".join(stages_seen))

# %% [markdown]
# ## What was measured
# `run.artifacts` holds every artefact's row of the report; `run.deployed` is the one the bundle ships.

# %%
for artifact in run.artifacts.values():
    latency = f"{artifact.latency_ms:.2f} ms" if artifact.latency_ms is not None else "not timed here"
    print(f"{artifact.name:12} {artifact.accuracy:7.2%}  {latency:>14}  {artifact.size_mb:6.2f} MB")
print(f"deployed: {run.deployed.name}; budgets {'pass' if run.passed else 'FAIL'}")
for budget in run.budgets:
    print(" ", budget.message)
print("report:", run.report_md)
print("bundle:", run.bundle)

# %% [markdown]
# ## Use the model
# The bundle runs without PyTorch: numpy, pillow and onnxruntime are all a device needs.

# %%
image = next(path for path in sorted(data.rglob("*")) if path.suffix.lower() in {".jpg", ".jpeg", ".png"})
assert run.bundle is not None  # every x86-cpu build writes one
predictor = edgetl.load(run.bundle)
best = predictor.predict([image], top_k=1)[0][0]
print(f"{image.name}: {best.label} ({best.score:.1%})")

# %% [markdown]
# A finished run can be read back later without building: `edgetl.load_run("runs/python-api")`.

# %%
again = edgetl.load_run(output)
assert again.deployed.accuracy == run.deployed.accuracy
