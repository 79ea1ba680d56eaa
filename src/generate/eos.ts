// The token ids that end generation for a model folder: the tokenizer's EOS plus generation_config.json's
// eos_token_id (a number or a list), as transformers' generate() uses them. Works on any FolderSource (a Node
// directory, a URL, files a browser user picked).

import type { FolderSource } from '../io/checkpoint.js';
import type { Tokenizer } from '../io/tokenizer.js';

export async function eosTokenIds(folder: FolderSource, tokenizer: Tokenizer): Promise<number[]> {
  const ids = new Set<number>();
  if (tokenizer.eosTokenId != null) ids.add(tokenizer.eosTokenId);
  const text = await folder.readText('generation_config.json');
  if (text !== null) {
    let eos: unknown;
    try {
      eos = (JSON.parse(text) as { eos_token_id?: unknown }).eos_token_id;
    } catch (e) {
      throw new Error(`${folder.name}/generation_config.json is not valid JSON: ${(e as Error).message}`);
    }
    for (const id of Array.isArray(eos) ? eos : eos == null ? [] : [eos]) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
        throw new Error(`${folder.name}/generation_config.json: eos_token_id ${JSON.stringify(eos)} is not a token id or a list of them`);
      }
      ids.add(id);
    }
  }
  return [...ids];
}
