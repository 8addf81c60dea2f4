// edgetl-web.mjs: classify images in the browser with an edgetl bundle and onnxruntime-web (WASM).
//
// The bundle's model_pixels.onnx has resize, center crop and normalisation as ONNX ops, so this module only
// decodes: image -> 8-bit RGB pixels (EXIF orientation applied, colour-managed to sRGB or not as
// preprocessing.json says, transparency composited over white) -> uint8 [1, height, width, 3] -> model.
// No dependencies besides onnxruntime-web, which the caller imports (the bundle's copy or its own) and passes in.
//
//   import * as ort from "./ort/ort.wasm.min.mjs";
//   import { loadClassifier } from "./edgetl-web.mjs";
//   const classifier = await loadClassifier({ ort, bundleUrl: new URL("../", import.meta.url) });
//   const { label, score, top } = await classifier.classify(fileOrImageOrVideoFrame);

/** Read the bundle's description, labels and preprocessing, and open model_pixels.onnx (or `modelUrl`) in onnxruntime-web. */
export async function loadClassifier({ ort, bundleUrl, modelUrl, numThreads, wasmPaths, executionProviders = ["wasm"] }) {
  const base = new URL(bundleUrl, globalThis.location?.href);
  const info = await fetchJson(new URL("bundle.json", base));
  const pixels = info.pixels_model || {};
  if (!pixels.made || pixels.form !== "any_size") {
    throw new Error(`this bundle has no any-size pixels model (${pixels.reason || pixels.form}); rebuild with package.pixels_model: any_size`);
  }
  const preprocessing = await fetchJson(new URL(info.preprocessing, base));
  const labels = (await fetchText(new URL(info.labels, base))).split("\n").filter((line) => line.length > 0);
  if (wasmPaths !== undefined) ort.env.wasm.wasmPaths = wasmPaths;
  if (numThreads !== undefined) ort.env.wasm.numThreads = numThreads;
  const modelBytes = new Uint8Array(await (await fetchOk(new URL(modelUrl ?? pixels.file, base))).arrayBuffer());
  const session = await ort.InferenceSession.create(modelBytes, { executionProviders, graphOptimizationLevel: "all" });
  return new Classifier(ort, session, labels, preprocessing, info);
}

export class Classifier {
  constructor(ort, session, labels, preprocessing, info) {
    this.ort = ort;
    this.session = session;
    this.labels = labels;
    this.preprocessing = preprocessing;
    this.info = info;
    this.inputName = session.inputNames[0];
    this.outputName = session.outputNames[0];
  }

  /** Threads the WASM backend runs with (1 unless the page is cross-origin isolated). */
  get threads() {
    const wanted = this.ort.env.wasm.numThreads;
    return globalThis.crossOriginIsolated ? wanted || defaultThreads() : 1;
  }

  /** A Blob/File, <img>, <video>, <canvas>, ImageBitmap or VideoFrame -> {label, index, score, top, logits, ms}. */
  async classify(source, topK = 5) {
    const start = performance.now();
    const image = await decodeRgb(source, this.preprocessing.color_management);
    const logits = await this.logits(image);
    return { ...this.rank(logits, topK), logits, width: image.width, height: image.height, ms: performance.now() - start };
  }

  /** The model's logits for decoded pixels ({rgb: Uint8Array, width, height}). */
  async logits(image) {
    const tensor = new this.ort.Tensor("uint8", image.rgb, [1, image.height, image.width, 3]);
    const outputs = await this.session.run({ [this.inputName]: tensor });
    const logits = Array.from(outputs[this.outputName].data);
    if (logits.length !== this.labels.length) {
      throw new Error(`the model gives ${logits.length} outputs but labels.txt names ${this.labels.length} classes`);
    }
    return logits;
  }

  rank(logits, topK) {
    const peak = Math.max(...logits);
    const exps = logits.map((v) => Math.exp(v - peak));
    const total = exps.reduce((a, b) => a + b, 0);
    const order = logits.map((_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b);
    const top = order.slice(0, topK).map((i) => ({ label: this.labels[i], index: i, score: exps[i] / total }));
    return { label: top[0].label, index: top[0].index, score: top[0].score, top };
  }
}

/** Decode to 8-bit RGB the way preprocessing.json's contract says (orientation, colour policy, alpha over white). */
export async function decodeRgb(source, colorManagement = "srgb") {
  const options = {
    imageOrientation: "from-image",
    colorSpaceConversion: colorManagement === "ignore" ? "none" : "default",
    premultiplyAlpha: "default",
  };
  const bitmap = source instanceof Blob ? await createImageBitmap(source, options) : await createImageBitmap(source);
  const { width, height } = bitmap;
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true, colorSpace: "srgb" });
  context.fillStyle = "#ffffff";
  context.fillRect(0, 0, width, height);
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = context.getImageData(0, 0, width, height).data;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i];
    rgb[j + 1] = rgba[i + 1];
    rgb[j + 2] = rgba[i + 2];
  }
  return { rgb, width, height };
}

/** onnxruntime-web's own default: half the logical cores, at most 4. */
export function defaultThreads() {
  return Math.min(4, Math.ceil((globalThis.navigator?.hardwareConcurrency || 1) / 2));
}

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
}

async function fetchJson(url) {
  return (await fetchOk(url)).json();
}

async function fetchText(url) {
  return (await fetchOk(url)).text();
}
