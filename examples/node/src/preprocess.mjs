// preprocessing.json implemented from its `contract`, step by step, in plain JavaScript.
// sharp (libvips) decodes, applies EXIF orientation and converts embedded ICC profiles to sRGB;
// the resize is PIL's antialiased fixed-point filter, ported exactly, because libvips' and
// every other library's resize gives different pixels (and different logits).
import sharp from 'sharp';

const PRECISION_BITS = 22; // 32 - 8 - 2, as PIL
const FILTERS = {
  bilinear: { support: 1.0, f: (x) => { x = Math.abs(x); return x < 1.0 ? 1.0 - x : 0.0; } },
  bicubic: {
    support: 2.0,
    f: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
      return 0.0;
    },
  },
};

/** Decoded 8-bit RGB pixels: {data: Uint8Array (HWC), width, height}. */
export async function decode(file, pre) {
  const ignoreIcc = pre.color_management !== 'srgb'; // schema 1 bundles: profiles ignored
  const { data, info } = await sharp(file, { ignoreIcc })
    .rotate() // EXIF orientation
    .flatten({ background: { r: 255, g: 255, b: 255 } }) // alpha over white
    .toColourspace('srgb')
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.channels === 3) return { data: new Uint8Array(data), width: info.width, height: info.height };
  const rgb = new Uint8Array(info.width * info.height * 3);
  for (let i = 0; i < info.width * info.height; i++) {
    for (let c = 0; c < 3; c++) rgb[i * 3 + c] = data[i * info.channels + (info.channels < 3 ? 0 : c)];
  }
  return { data: rgb, width: info.width, height: info.height };
}

function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const weights = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      weights[x] = filter.f((x + xmin - center + 0.5) * ss);
      ww += weights[x];
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0.0 ? weights[x] / ww : weights[x];
      kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * (1 << PRECISION_BITS)) : Math.trunc(0.5 + k * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { bounds, kk, ksize };
}

function clip8(sum) {
  const v = sum >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

function horizontal(src, width, height, outWidth, filter) {
  const { bounds, kk, ksize } = coefficients(width, outWidth, filter);
  const out = new Uint8Array(outWidth * height * 3);
  for (let y = 0; y < height; y++) {
    const row = y * width * 3;
    for (let xx = 0; xx < outWidth; xx++) {
      const xmin = bounds[xx * 2];
      const xmax = bounds[xx * 2 + 1];
      let s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
      for (let x = 0; x < xmax; x++) {
        const k = kk[xx * ksize + x];
        const p = row + (x + xmin) * 3;
        s0 += src[p] * k;
        s1 += src[p + 1] * k;
        s2 += src[p + 2] * k;
      }
      const o = (y * outWidth + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return out;
}

function vertical(src, width, height, outHeight, filter) {
  const { bounds, kk, ksize } = coefficients(height, outHeight, filter);
  const out = new Uint8Array(width * outHeight * 3);
  for (let yy = 0; yy < outHeight; yy++) {
    const ymin = bounds[yy * 2];
    const ymax = bounds[yy * 2 + 1];
    for (let x = 0; x < width; x++) {
      let s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
      for (let y = 0; y < ymax; y++) {
        const k = kk[yy * ksize + y];
        const p = ((y + ymin) * width + x) * 3;
        s0 += src[p] * k;
        s1 += src[p + 1] * k;
        s2 += src[p + 2] * k;
      }
      const o = (yy * width + x) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return out;
}

/** PIL's Image.resize for 8-bit RGB: horizontal pass, then vertical, each skipped when that side is unchanged. */
export function resize(image, outWidth, outHeight, interpolation) {
  const filter = FILTERS[interpolation];
  if (!filter) throw new Error(`interpolation ${interpolation} is not implemented by this client`);
  let { data, width, height } = image;
  if (outWidth !== width) {
    data = horizontal(data, width, height, outWidth, filter);
    width = outWidth;
  }
  if (outHeight !== height) {
    data = vertical(data, width, height, outHeight, filter);
    height = outHeight;
  }
  return { data, width, height };
}

export function roundHalfToEven(value) {
  const floor = Math.floor(value);
  const fraction = value - floor;
  if (fraction !== 0.5) return Math.round(value);
  return floor % 2 === 0 ? floor : floor + 1;
}

/** Decoded pixels -> normalized CHW Float32Array, exactly as preprocessing.json's contract says. */
export function toTensor(image, pre) {
  const { width, height } = image;
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  const newLong = Math.trunc((pre.resize * long) / short);
  const [newWidth, newHeight] = width <= height ? [pre.resize, newLong] : [newLong, pre.resize];
  const resized = resize(image, newWidth, newHeight, pre.interpolation);
  const crop = pre.crop;
  const left = roundHalfToEven((newWidth - crop) / 2);
  const top = roundHalfToEven((newHeight - crop) / 2);
  const mean = pre.mean.map(Math.fround);
  const std = pre.std.map(Math.fround);
  const f255 = Math.fround(255);
  const out = new Float32Array(3 * crop * crop);
  for (let y = 0; y < crop; y++) {
    for (let x = 0; x < crop; x++) {
      const p = ((y + top) * newWidth + (x + left)) * 3;
      for (let c = 0; c < 3; c++) {
        // float32 at every step, in the contract's order
        const scaled = Math.fround(resized.data[p + c] / f255);
        out[c * crop * crop + y * crop + x] = Math.fround(Math.fround(scaled - mean[c]) / std[c]);
      }
    }
  }
  return out;
}

export async function preprocess(file, pre) {
  return toTensor(await decode(file, pre), pre);
}
