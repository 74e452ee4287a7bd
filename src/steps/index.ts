import { image } from './image/image.js';
import { sbom } from './image/sbom.js';
import { kernelBuild } from './kernel/kernel-build.js';
import { kernelConfig } from './kernel/kernel-config.js';
import { kernelDebs } from './kernel/kernel-debs.js';
import { kernelSource } from './kernel/kernel-source.js';
import { driver } from './nvidia/driver.js';
import { driverModules } from './nvidia/driver-modules.js';
import { driverPackages } from './nvidia/driver-packages.js';
import { installerModules } from './nvidia/installer-modules.js';
import { toolkit } from './nvidia/toolkit.js';
import { rootfs } from './rootfs/rootfs.js';
import { createStepRegistry, type StepRegistry } from '../model/step.js';
import { vgpuHostModules } from './vgpu/host-modules.js';
import { vgpuImage } from './vgpu/vgpu-image.js';

/** Every step kind a pipeline can use. */
export function builtinSteps(): StepRegistry {
  return createStepRegistry([kernelSource, kernelConfig, kernelBuild, kernelDebs, rootfs, driverModules, installerModules, driver, driverPackages, toolkit, image, sbom, vgpuHostModules, vgpuImage]);
}
