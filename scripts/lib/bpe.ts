// What the project's generated BPE tokenizers share: deterministic merge learning over word counts, and the Hugging
// Face added-token entries (tokenizer.json added_tokens, tokenizer_config.json added_tokens_decoder). Used by the
// SentencePiece-style Llama tokenizer of the shipped checkpoints (llama-bpe.ts) and the byte-level Qwen2 tokenizer
// of the test folders (tests/helpers/tiny-qwen-folder.ts).

/**
 * BPE merges learned from word counts (each word a string of base symbols, one per code point): the most frequent
 * adjacent pair first, ties to the smallest pair in code-unit order (so the result never depends on Map iteration
 * order). Stops when `more(merges so far)` says so, when no pair is left, or when the best pair occurs fewer than
 * minCount times.
 */
export function bpeMerges(counts: Map<string, number>, more: (merges: readonly [string, string][]) => boolean, minCount = 1): [string, string][] {
  const words = [...counts.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([w, n]) => ({ syms: [...w], n }));
  const merges: [string, string][] = [];
  while (more(merges)) {
    const pairs = new Map<string, number>();
    for (const { syms, n } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const key = syms[i] + '\u0000' + syms[i + 1];
        pairs.set(key, (pairs.get(key) ?? 0) + n);
      }
    }
    let best: string | null = null;
    let bestN = 0;
    for (const [key, n] of pairs) {
      if (n > bestN || (n === bestN && best !== null && key < best)) {
        best = key;
        bestN = n;
      }
    }
    if (best === null || bestN < minCount) break;
    const [a, b] = best.split('\u0000') as [string, string];
    merges.push([a, b]);
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) {
          out.push(a + b);
          i++;
        } else {
          out.push(w.syms[i]!);
        }
      }
      w.syms = out;
    }
  }
  return merges;
}

/** A special added token of tokenizer.json. */
export function addedToken(id: number, content: string) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

/** tokenizer_config.json's added_tokens_decoder: each added token by its id (as a string), without the id. */
export function addedTokensDecoder(added: readonly ReturnType<typeof addedToken>[]): Record<string, unknown> {
  const decoder: Record<string, unknown> = {};
  for (const { id, ...rest } of added) decoder[String(id)] = rest;
  return decoder;
}
