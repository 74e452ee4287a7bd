import { GuestError } from '../errors.js';
import type { StepDefinition } from './types.js';

/**
 * A step kind whose real work has not landed in this version of gpu-guest. It fails at once with a
 * clear message instead of pretending: `--until` runs the steps that exist.
 */
export function unavailableStep(kind: string, resources: StepDefinition['resources'] = { cpu: 1 }): StepDefinition {
  return {
    kind,
    version: 0,
    resources,
    async run() {
      throw new GuestError('E_STEP_UNAVAILABLE', `step ${kind} is not available in this version of gpu-guest (see README "Status"; run with --until to stop before it)`);
    },
  };
}
