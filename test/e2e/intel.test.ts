import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { mountsUnder } from '../../src/sys/mounts.js';
import { cliBin, run, sharedCacheDir, suiteDir, writePipeline } from '../helpers.js';

let out: string;
let args: string[];
let build: Awaited<ReturnType<typeof run>>;
let verify: Awaited<ReturnType<typeof run>>;

// The README's main job: the intel pipeline from Debian's kernel source package (apt) and a
// Debian rootfs from the host's mirror, through the boot check.
beforeAll(async () => {
  const dir = suiteDir('gpu-guest-e2e-');
  out = join(dir, 'out');
  const file = writePipeline(dir, 'intel', '  version: "6.1"\n  source:\n    tarball: apt:linux-source-6.1\n');
  args = ['--pipeline', file, '--cache-dir', sharedCacheDir(), '--out-dir', out];
  build = await run(cliBin, ['build', ...args]);
  verify = await run(cliBin, ['verify', ...args]);
}, 2_400_000);

describe('intel guest end to end (apt kernel source → rootfs → image → boot)', () => {
  it('builds the six intel tasks', () => {
    expect(build.code, `${build.stdout}\n${build.stderr}`).toBe(0);
    expect(mountsUnder(sharedCacheDir())).toEqual([]);
    const manifest = JSON.parse(readFileSync(join(out, 'intel-test/manifest.json'), 'utf8'));
    expect(manifest.tasks.map((t: { id: string }) => t.id)).toEqual(['kernel-source', 'kernel-config', 'kernel-build', 'kernel-debs', 'rootfs', 'image']);
    expect(manifest.tasks[0].result.origin).toMatch(/^apt linux-source-6\.1=/);
    const kata = readFileSync(join(out, 'intel-test/kata/configuration-intel-gpu.toml'), 'utf8');
    expect(kata).toContain('machine_type = "pc"');
    expect(kata).toContain('hotplug_vfio_on_root_bus = true');
  });

  it('boots with i915 built in', () => {
    expect(verify.code, `${verify.stdout}\n${verify.stderr}`).toBe(0);
    expect(verify.stdout).toMatch(/pass {2}kernel-release {2}6\.1\.\d+-intel-gpu/);
    for (const opt of ['DRM', 'DRM_I915', 'DRM_I915_USERPTR']) expect(verify.stdout).toContain(`pass  config:CONFIG_${opt}  on`);
  });
});
