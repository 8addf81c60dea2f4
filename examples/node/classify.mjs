#!/usr/bin/env node
// Usage: node classify.mjs BUNDLE IMAGE... [--top K] [--json] [--pixels]
// Prints one line per image: the label, its index and probability (or one JSON object per line).
// --pixels: run model_pixels.onnx, handing it the decoded pixels (no resize or normalisation here).
// --tensors OUT.npy: also write the preprocessed input tensors (N, 3, crop, crop) float32, image order.
import { BundleError } from './src/bundle.mjs';
import { Classifier } from './src/classifier.mjs';
import { writeNpy } from './src/npy.mjs';
import { preprocess } from './src/preprocess.mjs';

const args = process.argv.slice(2);
const json = args.includes('--json');
const pixels = args.includes('--pixels');
const topAt = args.indexOf('--top');
const top = topAt >= 0 ? Number(args[topAt + 1]) : 1;
const tensorsAt = args.indexOf('--tensors');
const tensorsOut = tensorsAt >= 0 ? args[tensorsAt + 1] : null;
const valued = new Set([topAt + 1, tensorsAt + 1].filter((i) => i > 0));
const positional = args.filter((a, i) => !a.startsWith('--') && !valued.has(i));
if (positional.length < 2 || !(top >= 1)) {
  console.error('usage: node classify.mjs BUNDLE IMAGE... [--top K] [--json] [--pixels] [--tensors OUT.npy]');
  process.exit(2);
}
const [bundleDir, ...images] = positional;
try {
  const classifier = await Classifier.open(bundleDir, { pixels });
  if (tensorsOut) {
    const { crop } = classifier.pre;
    const all = new Float32Array(images.length * 3 * crop * crop);
    for (let i = 0; i < images.length; i++) all.set(await preprocess(images[i], classifier.pre), i * 3 * crop * crop);
    writeNpy(tensorsOut, all, [images.length, 3, crop, crop]);
  }
  for (const image of images) {
    const result = await classifier.classify(image, top);
    if (json) {
      console.log(JSON.stringify({ file: image, top: result.top }));
    } else {
      console.log(`${image}\t${result.top.map((t) => `${t.label} (${t.index}) ${t.probability.toFixed(4)}`).join('\t')}`);
    }
  }
} catch (error) {
  // Bad bundles and images are one line, exit 2, as edgetl's own CLI.
  console.error(error instanceof BundleError ? error.message : `error: ${error.message}`);
  process.exit(2);
}
