import { createStepRegistry, type StepRegistry } from './types.js';
import { unavailableStep } from './unavailable.js';

/** Every step kind a pipeline can use. */
export function builtinSteps(): StepRegistry {
  return createStepRegistry([
    unavailableStep('kernel-source'),
    unavailableStep('kernel-config'),
    unavailableStep('kernel-build', { cpu: 'all' }),
    unavailableStep('kernel-debs', { cpu: 'all' }),
    unavailableStep('rootfs'),
    unavailableStep('driver'),
    unavailableStep('toolkit'),
    unavailableStep('image'),
  ]);
}
