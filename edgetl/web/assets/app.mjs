// The bundle's demo page: pick images or start the camera; everything runs in this browser tab.
// runtime.json (written by the build) says where onnxruntime-web comes from: the bundle's own copy in ort/,
// or a pinned CDN URL when the build had no local copy. `?threads=N` sets the WASM threads (more than one only
// when the page is cross-origin isolated: served with COOP/COEP headers, as `edgetl serve BUNDLE` does);
// `?model=URL` loads another pixels model of the same classes (the build times the other precision that way).
import { loadClassifier, decodeRgb } from "./edgetl-web.mjs";

const params = new URLSearchParams(location.search);
const statusLine = document.getElementById("status");

async function start() {
  const runtime = await (await fetch(new URL("runtime.json", import.meta.url))).json();
  const ortUrl = new URL(runtime.module, import.meta.url);
  const ort = await import(ortUrl.href);
  const threads = params.has("threads") ? Number(params.get("threads")) : undefined;
  const classifier = await loadClassifier({
    ort,
    bundleUrl: new URL("../", import.meta.url),
    wasmPaths: new URL(runtime.wasm_paths, import.meta.url).href,
    numThreads: threads,
    modelUrl: params.get("model") ?? undefined,  // another pixels model of the same bundle (edgetl's timing)
  });
  document.getElementById("title").textContent = `${classifier.info.name}: ${classifier.labels.length} classes`;
  statusLine.textContent =
    `onnxruntime-web ${runtime.version}, WASM, ${classifier.threads} thread(s)` +
    (globalThis.crossOriginIsolated ? "" : " (not cross-origin isolated: one thread)") +
    `; ${classifier.info.model.artifact}, preprocessing in the model`;
  wireFiles(classifier);
  wireCamera(classifier);
  return classifier;
}

function wireFiles(classifier) {
  const input = document.getElementById("files");
  input.disabled = false;
  input.addEventListener("change", async () => {
    for (const file of input.files) {
      const row = document.createElement("div");
      row.className = "result";
      const thumb = document.createElement("img");
      thumb.src = URL.createObjectURL(file);
      const text = document.createElement("div");
      row.append(thumb, text);
      document.getElementById("results").prepend(row);
      try {
        text.append(describe(file.name, await classifier.classify(file)));
      } catch (error) {
        text.className = "error";
        text.textContent = `${file.name}: ${error.message}`;
      }
    }
  });
}

function wireCamera(classifier) {
  const button = document.getElementById("camera");
  const video = document.getElementById("video");
  if (!navigator.mediaDevices?.getUserMedia) {
    button.title = "no camera API here (the page must be served over https or from localhost)";
    return;
  }
  button.disabled = false;
  let running = false;
  button.addEventListener("click", async () => {
    if (running) {
      running = false;
      video.srcObject.getTracks().forEach((track) => track.stop());
      video.hidden = true;
      button.textContent = "Start camera";
      return;
    }
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    await video.play();
    video.hidden = false;
    running = true;
    button.textContent = "Stop camera";
    const live = document.getElementById("live");
    while (running) {
      const result = await classifier.classify(video);
      live.replaceChildren(describe("camera", result));
      await new Promise((resolve) => requestAnimationFrame(resolve));
    }
  });
}

function describe(name, result) {
  const box = document.createElement("div");
  const head = document.createElement("div");
  head.textContent = `${name}: ${result.label} (${result.ms.toFixed(1)} ms, ${result.width}x${result.height})`;
  box.append(head);
  for (const entry of result.top) {
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(2.5, 100 * entry.score)}%`;
    fill.textContent = `${(100 * entry.score).toFixed(1)}%`;
    bar.append(fill, ` ${entry.label}`);
    box.append(bar);
  }
  return box;
}

// What edgetl's own checks call through the DevTools protocol (and what a page test can use).
const ready = start().catch((error) => {
  statusLine.className = "error";
  statusLine.textContent = `could not load the model: ${error.message}`;
  throw error;
});

window.edgetl = {
  ready: ready.then(() => true),
  async classifyUrl(url) {
    const classifier = await ready;
    const blob = await (await fetch(url)).blob();
    const result = await classifier.classify(blob);
    return { index: result.index, label: result.label, score: result.score, logits: result.logits, width: result.width, height: result.height };
  },
  async timeModel(url, runs) {
    const classifier = await ready;
    const image = await decodeRgb(await (await fetch(url)).blob(), classifier.preprocessing.color_management);
    return timed(runs, () => classifier.logits(image));
  },
  async timeEndToEnd(url, runs) {
    const classifier = await ready;
    const blob = await (await fetch(url)).blob();
    return timed(runs, () => classifier.classify(blob));
  },
  async threads() {
    return (await ready).threads;
  },
};

/** Milliseconds of each of `runs` sequential calls of `call`. */
async function timed(runs, call) {
  const samples = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await call();
    samples.push(performance.now() - start);
  }
  return samples;
}
