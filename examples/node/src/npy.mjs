// Minimal .npy (format 1.0) reader and writer: float32 and uint8, C order. Enough to exchange
// tensors with edgetl (`reference/inputs.npy`, `edgetl bundle verify --inputs/--logits`).
import fs from 'node:fs';

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]);
const DTYPES = { '<f4': Float32Array, '|u1': Uint8Array, '<u1': Uint8Array };

export function readNpy(file) {
  const buffer = fs.readFileSync(file);
  if (!buffer.subarray(0, 6).equals(MAGIC)) throw new Error(`${file}: not a .npy file`);
  const major = buffer[6];
  const headerLength = major === 1 ? buffer.readUInt16LE(8) : buffer.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = buffer.subarray(start, start + headerLength).toString('latin1');
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  const Type = DTYPES[descr];
  if (!Type || fortran !== 'False' || shapeText === undefined) {
    throw new Error(`${file}: unsupported .npy (dtype ${descr}, fortran_order ${fortran})`);
  }
  const shape = shapeText.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const offset = start + headerLength;
  const bytes = buffer.subarray(offset);
  // Copy so the typed array is aligned whatever the header length was.
  const data = new Type(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  return { data, shape };
}

export function writeNpy(file, data, shape) {
  const descr = data instanceof Float32Array ? '<f4' : data instanceof Uint8Array ? '|u1' : null;
  if (!descr) throw new Error('writeNpy: only Float32Array and Uint8Array');
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const head = Buffer.alloc(10);
  MAGIC.copy(head, 0);
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  fs.writeFileSync(file, Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}
