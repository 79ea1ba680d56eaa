// Reading a Hugging Face preprocessor_config.json object: the keys every image processor shares (do_* flags,
// rescale_factor, image_mean / image_std, the PIL resample code), with HF's rule that a missing or null key keeps
// the class default and errors that name the file and the key. The Qwen2-VL and Idefics3 parsers read through it.

import { type PillowFilter, pillowFilterFromCode } from './resize.js';

type Triple = [number, number, number];

export class PreprocessorFields {
  constructor(
    readonly json: Record<string, unknown>,
    readonly file: string,
  ) {
    if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new Error(`${file}: preprocessor config must be a JSON object`);
  }

  /** Throws `<file>: "<key>" must be <want>, got <value>`. */
  bad(key: string, want: string, v: unknown = this.json[key]): never {
    throw new Error(`${this.file}: "${key}" must be ${want}, got ${JSON.stringify(v) ?? String(v)}`);
  }

  has(key: string): boolean {
    return this.json[key] !== undefined && this.json[key] !== null;
  }

  bool(key: string, def: boolean): boolean {
    if (!this.has(key)) return def;
    const v = this.json[key];
    return typeof v === 'boolean' ? v : this.bad(key, 'a boolean');
  }

  /** A finite number > 0 (`v` when it comes from a nested object, named by `key`). */
  posNum(key: string, v: unknown = this.json[key]): number {
    return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : this.bad(key, 'a finite number > 0', v);
  }

  /** A number or a list of 3 (per-channel image_mean / image_std). */
  triple(key: string, def: Triple): Triple {
    if (!this.has(key)) return def;
    const v = this.json[key];
    if (typeof v === 'number' && Number.isFinite(v)) return [v, v, v];
    if (Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x))) return [v[0] as number, v[1] as number, v[2] as number];
    return this.bad(key, 'a number or a list of 3 numbers');
  }

  /** The keys every processor has, over `cfg`'s defaults: flags, rescale_factor, mean / std (std non-zero), resample. */
  common<C extends { doResize: boolean; doRescale: boolean; doNormalize: boolean; doConvertRgb: boolean; rescaleFactor: number; imageMean: Triple; imageStd: Triple; resample: PillowFilter }>(cfg: C): C {
    cfg.doResize = this.bool('do_resize', cfg.doResize);
    cfg.doRescale = this.bool('do_rescale', cfg.doRescale);
    cfg.doNormalize = this.bool('do_normalize', cfg.doNormalize);
    cfg.doConvertRgb = this.bool('do_convert_rgb', cfg.doConvertRgb);
    if (this.has('rescale_factor')) cfg.rescaleFactor = this.posNum('rescale_factor');
    cfg.imageMean = this.triple('image_mean', cfg.imageMean);
    cfg.imageStd = this.triple('image_std', cfg.imageStd);
    if (cfg.imageStd.some((s) => s === 0)) this.bad('image_std', 'non-zero');
    if (this.has('resample')) {
      const r = this.json.resample;
      if (typeof r !== 'number' || !Number.isInteger(r) || r < 0 || r > 5) {
        this.bad('resample', 'a PIL resample code 0..5 (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)');
      }
      cfg.resample = pillowFilterFromCode(r as number);
    }
    return cfg;
  }
}
