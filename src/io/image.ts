// Image decoding to 8-bit RGB, matching what Hugging Face's slow image processors see: the file is
// opened with Pillow and `image.convert("RGB")` is applied (image_transforms.convert_to_rgb). So every
// PNG colour type / bit depth is reduced to RGB the way Pillow's PNG plugin and its Convert.c do it,
// not the "visually right" way (e.g. alpha is dropped, not composited; 16-bit grey saturates).
//
// PNG decoding is lossless, so PNG input is bit-exact with Pillow. JPEG goes through jpeg-js, whose
// IDCT / chroma upsampling differ from libjpeg-turbo's: expect small (+-1..2) differences per value
// against Pillow on JPEG input.

import { decode as decodePngRaw, encode as encodePngRaw } from 'fast-png';
import * as jpeg from 'jpeg-js';

/** An 8-bit RGB image, interleaved (R, G, B per pixel), rows top to bottom, no padding. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const JPEG_MAGIC = [0xff, 0xd8, 0xff];

function startsWith(bytes: Uint8Array, magic: number[]): boolean {
  if (bytes.length < magic.length) return false;
  return magic.every((b, i) => bytes[i] === b);
}

/** First bytes as hex, for error messages about unrecognised files. */
function describeStart(bytes: Uint8Array): string {
  if (bytes.length === 0) return 'empty file';
  const head = Array.from(bytes.subarray(0, 8), (b) => b.toString(16).padStart(2, '0')).join(' ');
  return `starts with ${head}${bytes.length > 8 ? ' ...' : ''}`;
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Checks the basic invariants of an RgbImage (used on decoder output and by callers' inputs). */
export function assertRgbImage(img: RgbImage, what = 'image'): void {
  const { width, height, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error(`${what}: invalid size ${width}x${height}`);
  }
  if (data.length !== width * height * 3) {
    throw new Error(`${what}: data has ${data.length} bytes, expected ${width}x${height}x3 = ${width * height * 3}`);
  }
}

/**
 * Decodes PNG or JPEG bytes (detected by their magic bytes, not by `name`) to 8-bit RGB.
 * `name` is only used in error messages.
 */
export function decodeImage(bytes: Uint8Array, name: string): RgbImage {
  let img: RgbImage;
  if (startsWith(bytes, PNG_MAGIC)) {
    img = decodePng(bytes, name);
  } else if (startsWith(bytes, JPEG_MAGIC)) {
    img = decodeJpeg(bytes, name);
  } else {
    throw new Error(`cannot decode image ${name}: not a PNG or JPEG (${describeStart(bytes)})`);
  }
  assertRgbImage(img, `cannot decode image ${name}`);
  return img;
}

/** Reads and decodes an image file (Node only: node:fs is imported lazily so browsers never load it). */
export async function loadImageFile(path: string): Promise<RgbImage> {
  const fs = await import('node:fs/promises');
  let bytes: Uint8Array;
  try {
    bytes = await fs.readFile(path);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ENOENT') throw new Error(`cannot read image ${path}: file not found`);
    if (code === 'EISDIR') throw new Error(`cannot read image ${path}: is a directory`);
    throw new Error(`cannot read image ${path}: ${errorMessage(e)}`);
  }
  // A Buffer may be a view into a shared pool; decoders only read, so a view is fine.
  return decodeImage(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), path);
}

/** Encodes an RGB image as an 8-bit RGB PNG (for tests and tools). */
export function encodePng(img: RgbImage): Uint8Array {
  assertRgbImage(img, 'encodePng');
  return encodePngRaw({ width: img.width, height: img.height, data: img.data, depth: 8, channels: 3 });
}

// ---------------------------------------------------------------------------------------------------
// PNG

function decodePng(bytes: Uint8Array, name: string): RgbImage {
  const fail = (why: string): never => {
    throw new Error(`cannot decode image ${name}: corrupt or truncated PNG (${why})`);
  };
  // IHDR must be the first chunk (offset 8: length, 'IHDR', 13 data bytes: width, height, bit depth at
  // byte 24, ..., interlace method at byte 28).
  if (bytes.length < 33) fail(`only ${bytes.length} bytes`);
  const isIhdr = bytes[12] === 0x49 && bytes[13] === 0x48 && bytes[14] === 0x44 && bytes[15] === 0x52;
  // fast-png's Adam7 path handles sub-byte pixels as whole bytes (it throws or returns wrong pixels):
  // refuse those files clearly instead. Such PNGs are rare (interlaced 1/2/4-bit grey or palette).
  if (isIhdr && bytes[28] === 1 && bytes[24]! < 8) {
    throw new Error(`cannot decode image ${name}: interlaced PNG with bit depth ${bytes[24]} is not supported`);
  }

  let png: ReturnType<typeof decodePngRaw>;
  try {
    // CRCs are checked so that corruption is reported instead of silently decoded.
    png = decodePngRaw(bytes, { checkCrc: true });
  } catch (e) {
    return fail(errorMessage(e));
  }
  const { width, height, depth, channels } = png;
  if (width < 1 || height < 1) fail(`size ${width}x${height}`);

  // Sub-byte depths come back packed (rows padded to whole bytes), 8-bit as bytes, 16-bit as Uint16.
  const rowBytes = depth < 8 ? Math.ceil((width * depth * channels) / 8) : 0;
  const expected = depth < 8 ? rowBytes * height : width * height * channels;
  if (png.data.length < expected) fail(`image data has ${png.data.length} values, expected ${expected}`);

  const src = png.data;
  const out = new Uint8Array(width * height * 3);
  const n = width * height;

  // Sample x of row y for 1/2/4-bit data (MSB first).
  const packed = (y: number, x: number): number => {
    const bit = x * depth;
    const byte = src[y * rowBytes + (bit >> 3)]!;
    return (byte >> (8 - depth - (bit & 7))) & ((1 << depth) - 1);
  };

  if (channels === 1 && png.palette !== undefined) {
    // Indexed colour ("P"). Pillow's palette starts zero-filled, so an index past the PLTE entries
    // reads black. Palette alpha (tRNS) is ignored by convert("RGB").
    const pal = png.palette;
    for (let y = 0, i = 0; y < height; y++) {
      for (let x = 0; x < width; x++, i++) {
        const idx = depth < 8 ? packed(y, x) : src[i]!;
        const c = pal[idx];
        out[i * 3] = c?.[0] ?? 0;
        out[i * 3 + 1] = c?.[1] ?? 0;
        out[i * 3 + 2] = c?.[2] ?? 0;
      }
    }
  } else if (channels === 1) {
    // Greyscale. Pillow unpacks 1-bit as mode "1" (0/255), 2-bit as v*0x55, 4-bit as v*0x11 ("L;2",
    // "L;4"), and opens 16-bit as "I;16", whose conversion to RGB clips to 255 (I16_RGB), it does
    // not take the high byte: a 16-bit grey PNG becomes mostly white. That is what HF sees.
    for (let y = 0, i = 0; y < height; y++) {
      for (let x = 0; x < width; x++, i++) {
        let v: number;
        if (depth === 16) v = Math.min(src[i]!, 255);
        else if (depth === 8) v = src[i]!;
        else v = packed(y, x) * (depth === 1 ? 255 : depth === 2 ? 0x55 : 0x11);
        out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = v;
      }
    }
  } else if (channels === 2 || channels === 3 || channels === 4) {
    // Grey+alpha, RGB, RGBA (depth 8 or 16). 16-bit samples keep their high byte (Pillow's "RGB;16B",
    // "RGBA;16B", "LA;16B" unpackers); alpha is dropped by convert("RGB").
    const shift = depth === 16 ? 8 : 0;
    const grey = channels === 2;
    for (let i = 0; i < n; i++) {
      const s = i * channels;
      if (grey) {
        out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = src[s]! >> shift;
      } else {
        out[i * 3] = src[s]! >> shift;
        out[i * 3 + 1] = src[s + 1]! >> shift;
        out[i * 3 + 2] = src[s + 2]! >> shift;
      }
    }
  } else {
    fail(`unsupported channel count ${channels}`);
  }
  return { width, height, data: out };
}

// ---------------------------------------------------------------------------------------------------
// JPEG

function decodeJpeg(bytes: Uint8Array, name: string): RgbImage {
  let dec: { width: number; height: number; data: Uint8Array };
  try {
    // tolerantDecoding only skips blocks past the image edge (as libjpeg does); a truncated file
    // still throws ("marker was not found"), like Pillow without LOAD_TRUNCATED_IMAGES.
    dec = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false, tolerantDecoding: true });
  } catch (e) {
    throw new Error(`cannot decode image ${name}: corrupt or truncated JPEG (${errorMessage(e)})`);
  }
  if (!dec || dec.width < 1 || dec.height < 1 || dec.data.length !== dec.width * dec.height * 3) {
    throw new Error(`cannot decode image ${name}: corrupt or truncated JPEG (no image data)`);
  }
  return { width: dec.width, height: dec.height, data: dec.data };
}
