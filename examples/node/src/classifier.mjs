// A bundle's model behind one call: image file -> label, with the bundle's own preprocessing.
import * as ort from 'onnxruntime-node';

import { openBundle } from './bundle.mjs';
import { decode, preprocess } from './preprocess.mjs';

export class Classifier {
  /**
   * pixels: use model_pixels.onnx (preprocessing in the graph): the client only decodes the image
   * and hands over uint8 RGB pixels of any size.
   */
  static async open(bundleDir, { threads = 1, pixels = false } = {}) {
    const bundle = openBundle(bundleDir);
    let modelPath = bundle.modelPath;
    if (pixels) {
      const record = bundle.info.pixels_model ?? {};
      if (!record.made || record.form !== 'any_size') {
        throw new Error(`${bundleDir}: no any_size in-graph preprocessing model in this bundle (${record.reason ?? record.form})`);
      }
      modelPath = bundle.path(record.file, 'pixels_model.file');
    }
    if (!modelPath.endsWith('.onnx')) {
      throw new Error(`${modelPath}: this client runs ONNX models (onnxruntime-node); the bundle ships ${bundle.info.model.file}`);
    }
    const session = await ort.InferenceSession.create(modelPath, {
      executionProviders: ['cpu'],
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
    });
    return new Classifier(bundle, session, pixels);
  }

  constructor(bundle, session, pixels) {
    this.bundle = bundle;
    this.session = session;
    this.pixels = pixels;
    this.pre = bundle.preprocessing;
    this.inputName = session.inputNames[0];
    this.outputName = session.outputNames[0];
  }

  /** Logits of the pixels model for one decoded image ({data, width, height}, uint8 RGB). */
  async pixelLogits(image) {
    const feeds = { [this.inputName]: new ort.Tensor('uint8', image.data, [1, image.height, image.width, 3]) };
    const result = await this.session.run(feeds);
    return Float32Array.from(result[this.outputName].data);
  }

  /** Logits for one CHW float32 tensor. */
  async logits(tensor) {
    const { crop } = this.pre;
    const feeds = { [this.inputName]: new ort.Tensor('float32', tensor, [1, 3, crop, crop]) };
    const result = await this.session.run(feeds);
    return Float32Array.from(result[this.outputName].data);
  }

  async classify(file, top = 1) {
    const logits = this.pixels
      ? await this.pixelLogits(await decode(file, this.pre))
      : await this.logits(await preprocess(file, this.pre));
    const max = Math.max(...logits);
    const exp = logits.map((v) => Math.exp(v - max));
    const total = exp.reduce((a, b) => a + b, 0);
    const order = [...logits.keys()].sort((a, b) => logits[b] - logits[a]).slice(0, top);
    return { file, logits, top: order.map((i) => ({ label: this.bundle.labels[i], index: i, probability: exp[i] / total })) };
  }
}
