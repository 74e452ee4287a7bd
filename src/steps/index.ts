import { kernelBuild } from './kernel/kernel-build.js';
import { kernelConfig } from './kernel/kernel-config.js';
import { kernelDebs } from './kernel/kernel-debs.js';
import { kernelSource } from './kernel/kernel-source.js';
import { createStepRegistry, type StepRegistry } from './types.js';
import { unavailableStep } from './unavailable.js';

/** Every step kind a pipeline can use. */
export function builtinSteps(): StepRegistry {
  return createStepRegistry([
    kernelSource,
    kernelConfig,
    kernelBuild,
    kernelDebs,
    unavailableStep('rootfs'),
    unavailableStep('driver'),
    unavailableStep('toolkit'),
    unavailableStep('image'),
  ]);
}
