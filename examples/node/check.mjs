#!/usr/bin/env node
// Usage: node check.mjs BUNDLE [--out DIR]
// Checks this client against the bundle's references, the two halves separately:
//   1. its preprocessing of reference/NNN.* against reference/inputs.npy,
//   2. the model run on reference/inputs.npy against reference/logits.npy,
//   3. end to end (own preprocessing + model): top-1 agreement,
// each with the tolerances reference/reference.json states. Writes inputs.npy, logits.npy and
// e2e_logits.npy into DIR for `edgetl bundle verify`. Exit 0 ok, 1 mismatch, 2 bad bundle.
import path from 'node:path';
import fs from 'node:fs';

import { BundleError } from './src/bundle.mjs';
import { Classifier } from './src/classifier.mjs';
import { readNpy, writeNpy } from './src/npy.mjs';
import { preprocess } from './src/preprocess.mjs';

const args = process.argv.slice(2);
const outAt = args.indexOf('--out');
const out = outAt >= 0 ? args[outAt + 1] : null;
const bundleDir = args.find((a, i) => !a.startsWith('--') && (outAt < 0 || i !== outAt + 1));
if (!bundleDir) {
  console.error('usage: node check.mjs BUNDLE [--out DIR]');
  process.exit(2);
}

function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

try {
  const classifier = await Classifier.open(bundleDir);
  const { bundle } = classifier;
  const { reference } = bundle;
  const tolerances = reference.tolerances;
  if (!tolerances) throw new BundleError(`${bundleDir}: no reference tensors in this bundle (built by an older edgetl)`);
  const expectedInputs = readNpy(bundle.path(reference.inputs.file, 'reference inputs'));
  const expectedLogits = readNpy(bundle.path(reference.logits.file, 'reference logits'));
  const count = reference.images.length;
  const size = expectedInputs.data.length / count;
  const classes = expectedLogits.data.length / count;

  const inputs = new Float32Array(expectedInputs.data.length);
  const logits = new Float32Array(expectedLogits.data.length);
  const e2e = new Float32Array(expectedLogits.data.length);
  let inputDiff = 0, logitDiff = 0, e2eDiff = 0, agreeRef = 0, agreeE2e = 0;
  for (let i = 0; i < count; i++) {
    const own = await preprocess(bundle.path(reference.images[i].file, 'reference image'), bundle.preprocessing);
    inputs.set(own, i * size);
    const given = expectedInputs.data.subarray(i * size, (i + 1) * size);
    for (let j = 0; j < size; j++) inputDiff = Math.max(inputDiff, Math.abs(own[j] - given[j]));
    const fromReference = await classifier.logits(Float32Array.from(given));
    const fromOwn = await classifier.logits(own);
    logits.set(fromReference, i * classes);
    e2e.set(fromOwn, i * classes);
    const expected = expectedLogits.data.subarray(i * classes, (i + 1) * classes);
    for (let c = 0; c < classes; c++) {
      logitDiff = Math.max(logitDiff, Math.abs(fromReference[c] - expected[c]));
      e2eDiff = Math.max(e2eDiff, Math.abs(fromOwn[c] - expected[c]));
    }
    agreeRef += argmax(fromReference) === argmax(expected) ? 1 : 0;
    agreeE2e += argmax(fromOwn) === argmax(expected) ? 1 : 0;
  }
  const minAgreement = tolerances.min_top1_agreement;
  const checks = [
    ['preprocessing: inputs max |diff|', inputDiff, inputDiff <= tolerances.inputs_max_abs, `tolerance ${tolerances.inputs_max_abs}`],
    ['model on reference inputs: logits max |diff|', logitDiff, logitDiff <= tolerances.logits_max_abs && (100 * agreeRef) / count >= minAgreement, `tolerance ${tolerances.logits_max_abs}, top-1 ${agreeRef}/${count}`],
    ['end to end: logits max |diff|', e2eDiff, (100 * agreeE2e) / count >= minAgreement, `reported only; top-1 ${agreeE2e}/${count} (min ${minAgreement}%)`],
  ];
  for (const [what, value, ok, note] of checks) console.log(`${what} ${value.toExponential(3)} (${note}): ${ok ? 'ok' : 'FAIL'}`);
  if (out) {
    fs.mkdirSync(out, { recursive: true });
    writeNpy(path.join(out, 'inputs.npy'), inputs, reference.inputs.shape);
    writeNpy(path.join(out, 'logits.npy'), logits, reference.logits.shape);
    writeNpy(path.join(out, 'e2e_logits.npy'), e2e, reference.logits.shape);
  }
  process.exit(checks.every(([, , ok]) => ok) ? 0 : 1);
} catch (error) {
  console.error(error instanceof BundleError ? error.message : `error: ${error.message}`);
  process.exit(2);
}
