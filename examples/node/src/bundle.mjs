// Open an edgetl device bundle the way its README says: every path stays inside the bundle and
// every file's SHA-256 matches bundle.json before anything is loaded.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export const BUNDLE_SCHEMA = 'edgetl.bundle/1';
export const PREPROCESSING_SCHEMAS = ['edgetl.preprocessing/1', 'edgetl.preprocessing/2'];

export class BundleError extends Error {}

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw new BundleError(`${file}: unreadable (${error.message})`);
  }
}

/** `root/relative`, refused unless relative and inside the bundle once symlinks are resolved. */
export function inside(root, relative, what) {
  if (typeof relative !== 'string' || relative === '' || path.isAbsolute(relative)) {
    throw new BundleError(`${path.join(root, 'bundle.json')}: ${what} ${JSON.stringify(relative)} must be a path inside the bundle`);
  }
  const full = path.join(root, relative);
  const realRoot = fs.realpathSync(root);
  let real;
  try {
    real = fs.realpathSync(full);
  } catch {
    throw new BundleError(`${full}: missing from the bundle; copy the whole bundle directory`);
  }
  if (real !== realRoot && !real.startsWith(realRoot + path.sep)) {
    throw new BundleError(`${path.join(root, 'bundle.json')}: ${what} ${JSON.stringify(relative)} points outside the bundle; refusing to open it`);
  }
  return full;
}

function sha256(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

export function openBundle(root) {
  const infoPath = path.join(root, 'bundle.json');
  if (!fs.existsSync(infoPath)) throw new BundleError(`${root}: not an edgetl device bundle (bundle.json missing)`);
  const info = readJson(infoPath);
  if (info.schema !== BUNDLE_SCHEMA) throw new BundleError(`${infoPath}: schema ${info.schema}, expected ${BUNDLE_SCHEMA}`);
  const files = info.files ?? {};
  if (Object.keys(files).length === 0) throw new BundleError(`${infoPath}: no "files" hashes (built by an older edgetl); rebuild the bundle`);
  for (const [relative, digest] of Object.entries(files)) {
    const file = inside(root, relative, 'file');
    if (sha256(file) !== digest) {
      throw new BundleError(`${file}: its SHA-256 does not match the one in bundle.json (changed or damaged after the build)`);
    }
  }
  const preprocessing = readJson(inside(root, info.preprocessing, 'preprocessing'));
  if (!PREPROCESSING_SCHEMAS.includes(preprocessing.schema)) {
    throw new BundleError(`${root}/preprocessing.json: schema ${preprocessing.schema} is not one this client implements`);
  }
  const labels = fs.readFileSync(inside(root, info.labels, 'labels'), 'utf8').split('\n').filter((l) => l.length > 0);
  const reference = readJson(inside(root, info.reference.file, 'reference'));
  return {
    root,
    info,
    preprocessing,
    labels,
    reference,
    modelPath: inside(root, info.model.file, 'model.file'),
    path: (relative, what) => inside(root, relative, what),
  };
}
