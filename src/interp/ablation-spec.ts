// Head interventions as InterventionSpecs: heads scaled or masked (mode "scale"), mean-ablated ("mean_ablate") or
// steered ("steer"), checked against the model's dims. Separate from the experiment (ablation.ts), which builds one
// per run, so that a single intervention can be built on its own; the vectors come from store-vectors.ts.

import { type InterventionSpec, type ModelDims, type QueryScope, type Tower, parseInterventions } from '../spec/spec.js';
import { type HeadRef, headKey, headName } from './heads.js';
import type { SteeringDirection } from './store-vectors.js';

/**
 * What an intervention does to the output z_h of each of its heads:
 *   scale:        z_h *= epsilon            (epsilon 0 ablates, 0.001 is CogVision's masking)
 *   mean_ablate:  z_h  = mean_h             (the head's mean z over the activation store, meanVectors)
 *   steer:        z_h += alpha sigma_h d_h  (ITI / CogVision emphasis, alpha 0.1 in CogVision; steeringDirections)
 */
export type AblationMode = 'scale' | 'mean_ablate' | 'steer';
export const ABLATION_MODES: readonly AblationMode[] = ['scale', 'mean_ablate', 'steer'];
/** CogVision's emphasis strength. */
export const DEFAULT_STEER_ALPHA = 0.1;

export interface BuildInterventionOptions {
  /** Mode "scale": the factor on z_h (default 0: ablation; 0.001 is CogVision's masking). */
  epsilon?: number;
  /** Mode "steer": the strength (default 0.1). */
  alpha?: number;
  /** Mode "mean_ablate": vectors by "layer:head" (meanVectors). */
  means?: ReadonlyMap<string, ArrayLike<number>>;
  /** Mode "steer": direction and sigma by "layer:head" (steeringDirections). */
  directions?: ReadonlyMap<string, SteeringDirection>;
  /** Default "text". */
  tower?: Tower;
  /** Mode "steer": the rows steered (default "all"). */
  queries?: QueryScope;
}

/** The InterventionSpec that applies `mode` to `heads`, validated by parseInterventions against the model's dims. */
export function buildIntervention(mode: AblationMode, heads: readonly HeadRef[], opts: BuildInterventionOptions, dims: ModelDims): InterventionSpec {
  const tower = opts.tower ?? 'text';
  const seen = new Set<string>();
  for (const h of heads) {
    if (seen.has(headKey(h))) throw new Error(`buildIntervention: head ${headName(h)} is listed twice`);
    seen.add(headKey(h));
  }
  const base = (h: HeadRef) => ({ tower, layer: h.layer, head: h.head });
  let json: Record<string, unknown>;
  if (mode === 'scale') {
    json = { head_scale: heads.map((h) => ({ ...base(h), scale: opts.epsilon ?? 0 })) };
  } else if (mode === 'mean_ablate') {
    json = {
      mean_ablate: heads.map((h) => {
        const mean = opts.means?.get(headKey(h));
        if (!mean) throw new Error(`buildIntervention: no mean vector for head ${headName(h)}`);
        return { ...base(h), mean };
      }),
    };
  } else if (mode === 'steer') {
    json = {
      steer: heads.map((h) => {
        const s = opts.directions?.get(headKey(h));
        if (!s) throw new Error(`buildIntervention: no steering direction for head ${headName(h)}`);
        return { ...base(h), alpha: opts.alpha ?? DEFAULT_STEER_ALPHA, sigma: s.sigma, direction: s.direction, queries: opts.queries ?? 'all' };
      }),
    };
  } else {
    throw new Error(`buildIntervention: mode must be one of ${ABLATION_MODES.join(', ')}, got ${JSON.stringify(mode)}`);
  }
  return parseInterventions(json, dims, `${mode} intervention`);
}
