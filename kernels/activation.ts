// Activation names and their shader defines; free of WGSL imports so configs (and Node scripts) can use it.

import type { Defines } from '../src/gpu/wgsl.js';

export type Activation = 'none' | 'gelu' | 'gelu_tanh' | 'quick_gelu' | 'silu';

const ACT_DEFINE: Record<Activation, string | null> = {
  none: null,
  gelu: 'ACT_GELU',
  gelu_tanh: 'ACT_GELU_TANH',
  quick_gelu: 'ACT_QUICK_GELU',
  silu: 'ACT_SILU',
};

/** Map a Hugging Face `hidden_act` name to a kernel activation; `where` names the config field for errors. */
export function parseActivation(name: string, where: string): Activation {
  switch (name) {
    case 'gelu':
      return 'gelu';
    case 'gelu_pytorch_tanh':
    case 'gelu_new':
    case 'gelu_fast':
      return 'gelu_tanh';
    case 'quick_gelu':
      return 'quick_gelu';
    case 'silu':
    case 'swish':
      return 'silu';
    default:
      throw new Error(`${where}: unsupported activation '${name}' (supported: gelu, gelu_pytorch_tanh, quick_gelu, silu)`);
  }
}

export function activationDefines(a: Activation): Defines {
  const d = ACT_DEFINE[a];
  return d ? { [d]: true } : {};
}

