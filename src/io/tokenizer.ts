// Tokenizers from a Hugging Face folder: tokenizer.json run by @huggingface/tokenizers (the pure-JS runtime of
// the `tokenizers` format), tokenizer_config.json / special_tokens_map.json for the special tokens and the
// BOS/EOS rule, and chat templates rendered with @huggingface/jinja.
//
// BOS/EOS follow transformers: LlamaTokenizerFast (and any tokenizer_config.json that states add_bos_token /
// add_eos_token) rebuilds the post-processor from those flags, add_bos_token defaulting to true for the Llama
// family and add_eos_token to false; other tokenizers keep the post_processor of their tokenizer.json.
// Decoding keeps clean_up_tokenization_spaces off unless the config turns it on (LlamaTokenizerFast's default).

import { Template } from '@huggingface/jinja';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import type { FolderSource } from './checkpoint.js';

export class TokenizerError extends Error {
  override name = 'TokenizerError';
}

export interface ChatMessage {
  role: string;
  content: string | { type: 'text' | 'image'; text?: string }[];
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** A special token as tokenizer_config.json / special_tokens_map.json store it: a string or {content: ...}. */
function tokenString(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return null;
}

/** Whether tokenizer_config.json names a Llama-family class (LlamaTokenizer, LlamaTokenizerFast, CodeLlamaTokenizer). */
function isLlamaClass(cfg: Json): boolean {
  return typeof cfg.tokenizer_class === 'string' && /llamatokenizer/i.test(cfg.tokenizer_class);
}

/** The chat template kept in tokenizer_config.json: a string, or a list of named templates ("default" wins). */
function configChatTemplate(cfg: Json, where: string): string | null {
  const t = cfg.chat_template;
  if (t === undefined || t === null) return null;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const named = t.filter((x): x is { name: string; template: string } => isObject(x) && typeof x.name === 'string' && typeof x.template === 'string');
    const pick = named.find((x) => x.name === 'default') ?? named[0];
    if (pick) return pick.template;
  }
  throw new TokenizerError(`${where}: "chat_template" must be a string or a list of {name, template}`);
}

function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new TokenizerError(`${where} is not valid JSON: ${(e as Error).message}`);
  }
}

export class Tokenizer {
  readonly vocabSize: number;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  readonly padTokenId: number | null;
  readonly unkTokenId: number | null;
  readonly chatTemplate: string | null;
  /** null: tokenizer.json's post_processor adds the special tokens; otherwise the explicit Llama-style rule. */
  private readonly explicitSpecial: { bos: boolean; eos: boolean } | null;
  private readonly cleanUpSpaces: boolean;
  private readonly specialStrings: Record<string, string>;
  private readonly specialIds: Set<number>;
  private compiledTemplate: Template | null = null;

  private constructor(
    private readonly hf: HfTokenizer,
    info: {
      vocabSize: number;
      bos: number | null;
      eos: number | null;
      pad: number | null;
      unk: number | null;
      explicitSpecial: { bos: boolean; eos: boolean } | null;
      cleanUpSpaces: boolean;
      specialStrings: Record<string, string>;
      specialIds: Set<number>;
      chatTemplate: string | null;
    },
  ) {
    this.vocabSize = info.vocabSize;
    this.bosTokenId = info.bos;
    this.eosTokenId = info.eos;
    this.padTokenId = info.pad;
    this.unkTokenId = info.unk;
    this.explicitSpecial = info.explicitSpecial;
    this.cleanUpSpaces = info.cleanUpSpaces;
    this.specialStrings = info.specialStrings;
    this.specialIds = info.specialIds;
    this.chatTemplate = info.chatTemplate;
  }

  /**
   * Reads tokenizer.json (required) and, when present, tokenizer_config.json, special_tokens_map.json and a chat
   * template (chat_template.jinja, else chat_template.json, else tokenizer_config.json's chat_template).
   */
  static async fromFolder(folder: FolderSource): Promise<Tokenizer> {
    const where = (f: string) => `${folder.name}/${f}`;
    const tokText = await folder.readText('tokenizer.json');
    if (tokText === null) {
      throw new TokenizerError(
        `no tokenizer.json in ${folder.name}: vlmscope needs the fast-tokenizer file (tokenizer.json) of the checkpoint`,
      );
    }
    const tokJson = parseJson(tokText, where('tokenizer.json'));
    const readObj = async (f: string): Promise<Json | undefined> => {
      const text = await folder.readText(f);
      if (text === null) return undefined;
      const v = parseJson(text, where(f));
      if (!isObject(v)) throw new TokenizerError(`${where(f)} must be a JSON object`);
      return v;
    };
    const cfg = await readObj('tokenizer_config.json');
    const stm = await readObj('special_tokens_map.json');
    let template: string | null | undefined = await folder.readText('chat_template.jinja');
    if (template === null) {
      const ct = await readObj('chat_template.json');
      if (ct !== undefined) {
        if (typeof ct.chat_template !== 'string') {
          throw new TokenizerError(`${where('chat_template.json')}: "chat_template" must be a string`);
        }
        template = ct.chat_template;
      } else {
        template = undefined; // fall back to tokenizer_config.json's chat_template
      }
    }
    return Tokenizer.build(tokJson, cfg, stm, template, {
      tokenizer: where('tokenizer.json'),
      config: where('tokenizer_config.json'),
      map: where('special_tokens_map.json'),
    });
  }

  /**
   * From parsed JSON objects. `chatTemplate` overrides tokenizer_config.json's chat_template when given (null: no
   * template).
   */
  static fromJson(tokenizerJson: unknown, tokenizerConfig?: unknown, specialTokensMap?: unknown, chatTemplate?: string | null): Tokenizer {
    return Tokenizer.build(tokenizerJson, tokenizerConfig, specialTokensMap, chatTemplate, {
      tokenizer: 'tokenizer.json',
      config: 'tokenizer_config.json',
      map: 'special_tokens_map.json',
    });
  }

  private static build(
    tokenizerJson: unknown,
    tokenizerConfig: unknown,
    specialTokensMap: unknown,
    chatTemplate: string | null | undefined,
    names: { tokenizer: string; config: string; map: string },
  ): Tokenizer {
    if (!isObject(tokenizerJson)) throw new TokenizerError(`${names.tokenizer} must be a JSON object`);
    if (!isObject(tokenizerJson.model)) {
      throw new TokenizerError(`${names.tokenizer} has no "model" object: not a Hugging Face tokenizers file`);
    }
    if (tokenizerConfig !== undefined && tokenizerConfig !== null && !isObject(tokenizerConfig)) {
      throw new TokenizerError(`${names.config} must be a JSON object`);
    }
    if (specialTokensMap !== undefined && specialTokensMap !== null && !isObject(specialTokensMap)) {
      throw new TokenizerError(`${names.map} must be a JSON object`);
    }
    const cfg: Json = (tokenizerConfig as Json | undefined) ?? {};
    const stm: Json = (specialTokensMap as Json | undefined) ?? {};
    const addedTokens = tokenizerJson.added_tokens ?? [];
    if (!Array.isArray(addedTokens)) throw new TokenizerError(`${names.tokenizer}: "added_tokens" must be a list`);
    // The runtime expects these keys to exist (null when unused).
    const json: Json = { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, ...tokenizerJson, added_tokens: addedTokens };

    let hf: HfTokenizer;
    try {
      // The runtime reads only a few keys of the config (eos_token for Unigram, remove_space, cleanup...).
      const runtimeCfg: Json = {};
      for (const k of ['eos_token', 'bos_token', 'pad_token', 'unk_token', 'remove_space', 'additional_special_tokens']) {
        const v = k === 'additional_special_tokens' ? cfg[k] : tokenString(cfg[k] ?? stm[k]);
        if (k === 'additional_special_tokens') {
          if (Array.isArray(v)) runtimeCfg[k] = v.map(tokenString).filter((x): x is string => x !== null);
        } else if (v !== null && v !== undefined) {
          runtimeCfg[k] = v;
        }
      }
      runtimeCfg.clean_up_tokenization_spaces = false;
      hf = new HfTokenizer(json, runtimeCfg);
    } catch (e) {
      throw new TokenizerError(`${names.tokenizer} could not be loaded: ${(e as Error).message}`);
    }

    let vocabSize = 0;
    for (const id of hf.get_vocab(true).values()) vocabSize = Math.max(vocabSize, id + 1);
    if (vocabSize === 0) throw new TokenizerError(`${names.tokenizer} has an empty vocabulary`);

    const llama = isLlamaClass(cfg);
    const specialStrings: Record<string, string> = {};
    const idOf = (key: 'bos_token' | 'eos_token' | 'pad_token' | 'unk_token', llamaDefault: string | null): number | null => {
      let s: string | null = null;
      if (key in cfg) s = tokenString(cfg[key]);
      else if (key in stm) s = tokenString(stm[key]);
      else if (llama) s = llamaDefault;
      if (s === null) return null;
      const id = hf.token_to_id(s);
      if (id === undefined) {
        throw new TokenizerError(`${key in cfg ? names.config : names.map}: ${key} ${JSON.stringify(s)} is not in the vocabulary of ${names.tokenizer}`);
      }
      specialStrings[key] = s;
      return id;
    };
    const unk = idOf('unk_token', '<unk>');
    const bos = idOf('bos_token', '<s>');
    const eos = idOf('eos_token', '</s>');
    const pad = idOf('pad_token', null);

    let explicitSpecial: { bos: boolean; eos: boolean } | null = null;
    const hasFlag = (k: string) => typeof cfg[k] === 'boolean';
    if (llama || hasFlag('add_bos_token') || hasFlag('add_eos_token')) {
      explicitSpecial = {
        bos: hasFlag('add_bos_token') ? (cfg.add_bos_token as boolean) : llama,
        eos: hasFlag('add_eos_token') ? (cfg.add_eos_token as boolean) : false,
      };
      if (explicitSpecial.bos && bos === null) throw new TokenizerError(`${names.config}: add_bos_token is true but there is no bos_token`);
      if (explicitSpecial.eos && eos === null) throw new TokenizerError(`${names.config}: add_eos_token is true but there is no eos_token`);
    }

    const specialIds = new Set<number>();
    for (const t of addedTokens) if (isObject(t) && t.special === true && typeof t.id === 'number') specialIds.add(t.id);
    for (const id of [bos, eos, pad, unk]) if (id !== null) specialIds.add(id);

    const template = chatTemplate === undefined ? configChatTemplate(cfg, names.config) : chatTemplate;
    return new Tokenizer(hf, {
      vocabSize,
      bos,
      eos,
      pad,
      unk,
      explicitSpecial,
      cleanUpSpaces: cfg.clean_up_tokenization_spaces === true,
      specialStrings,
      specialIds,
      chatTemplate: template,
    });
  }

  /** Token ids of `text`; special tokens written in the text (e.g. "<image>") become their single ids. */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    const add = opts.addSpecialTokens !== false;
    if (this.explicitSpecial === null) return this.hf.encode(text, { add_special_tokens: add }).ids;
    const ids = text.length === 0 ? [] : this.hf.encode(text, { add_special_tokens: false }).ids;
    if (add && this.explicitSpecial.bos) ids.unshift(this.bosTokenId!);
    if (add && this.explicitSpecial.eos) ids.push(this.eosTokenId!);
    return ids;
  }

  /** Text of `ids`; byte-fallback tokens (<0xE2><0x82><0xAC>) are joined into their UTF-8 characters. */
  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    let list = [...ids];
    for (const id of list) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new TokenizerError(`cannot decode token id ${JSON.stringify(id)}: outside the vocabulary (0..${this.vocabSize - 1})`);
      }
    }
    if (opts.skipSpecialTokens) list = list.filter((id) => !this.specialIds.has(id));
    if (list.length === 0) return '';
    return this.hf.decode(list, { skip_special_tokens: false, clean_up_tokenization_spaces: this.cleanUpSpaces });
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  /** Whether `id` is a special token (added as special, or one of bos/eos/pad/unk). */
  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /**
   * Renders the chat template as transformers' apply_chat_template does: `messages`, `add_generation_prompt`
   * and the special tokens (bos_token, eos_token, unk_token, pad_token) as variables.
   */
  applyChatTemplate(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
    if (this.chatTemplate === null) {
      throw new TokenizerError(
        'this tokenizer has no chat template (none in tokenizer_config.json, chat_template.json or chat_template.jinja)',
      );
    }
    if (!this.compiledTemplate) {
      try {
        this.compiledTemplate = new Template(this.chatTemplate);
      } catch (e) {
        throw new TokenizerError(`the chat template does not parse: ${(e as Error).message}`);
      }
    }
    try {
      return this.compiledTemplate.render({
        messages,
        add_generation_prompt: opts.addGenerationPrompt ?? false,
        ...this.specialStrings,
      });
    } catch (e) {
      throw new TokenizerError(`the chat template failed to render: ${(e as Error).message}`);
    }
  }
}

/**
 * Incremental detokenizer for streaming: push ids, get the newly completed text. Text is emitted only when the
 * decoded window does not end in an incomplete UTF-8 / byte-fallback sequence (U+FFFD), so the concatenation of
 * all pushes and the final flush() equals decode() of all ids (for decoders whose output for a longer sequence
 * extends the output for a shorter one, as Llama/SentencePiece decoders' do with clean-up of spaces off). Each
 * step decodes a short window (the tokens since the previous emission plus the ones emitted then), never the
 * whole sequence: the window's first token loses its leading space to the Strip decoder both in the window's
 * text and in its already-emitted prefix, so the difference is right.
 */
export class TextStreamer {
  private ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;
  private readonly skip: boolean;

  constructor(
    private readonly tok: Tokenizer,
    opts: { skipSpecialTokens?: boolean } = {},
  ) {
    this.skip = opts.skipSpecialTokens ?? false;
  }

  push(id: number): string {
    // Skipped tokens are dropped here rather than in decode(), so a window never starts with a token that
    // decodes to nothing (the next token would then lose its leading space).
    if (this.skip && this.tok.isSpecial(id)) return '';
    this.ids.push(id);
    const prefixText = this.decodeRange(this.prefixOffset, this.readOffset);
    const newText = this.decodeRange(this.prefixOffset, this.ids.length);
    if (newText.length > prefixText.length && !newText.endsWith('\uFFFD')) {
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      return newText.slice(prefixText.length);
    }
    return '';
  }

  /**
   * Whatever is still held back (e.g. a truncated multi-byte character, emitted as U+FFFD, as decode() gives it).
   * Pushing may continue afterwards.
   */
  flush(): string {
    const prefixText = this.decodeRange(this.prefixOffset, this.readOffset);
    const newText = this.decodeRange(this.prefixOffset, this.ids.length);
    if (newText.length <= prefixText.length) return '';
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return newText.slice(prefixText.length);
  }

  private decodeRange(from: number, to: number): string {
    if (to <= from) return '';
    return this.tok.decode(this.ids.slice(from, to));
  }
}
