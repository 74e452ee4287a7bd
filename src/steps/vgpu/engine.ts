import { copyFileSync, cpSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { which } from 'zx';
import { GuestError } from '../../errors.js';
import { runLogged } from '../../sys/exec.js';
import type { StepContext } from '../types.js';

/**
 * `vgpu.engine: buildah | podman | docker`: builds the user's Dockerfile folder (NVIDIA's
 * vgpu-manager/<os>) with DRIVER_VERSION as build argument, instead of the built-in builder, and
 * exports it as an oci-archive. Returns the manifest digest.
 */
export async function buildWithEngine(
  ctx: StepContext,
  o: { engine: 'buildah' | 'podman' | 'docker'; dockerfileDir?: string; run: string; imageName: string; version: string; reference: string; archive: string },
): Promise<string> {
  if (!o.dockerfileDir) throw new GuestError('E_PIPELINE_INVALID', `vgpu.engine ${o.engine} builds a Dockerfile folder: set vgpu.dockerfileDir (NVIDIA's vgpu-manager/<os> folder)`);
  if (!(await which(o.engine, { nothrow: true }))) throw new GuestError('E_MISSING_TOOL', `vgpu.engine is ${o.engine}, but ${o.engine} is not installed (install it, or use the built-in builder: vgpu.engine=builtin)`);
  const context = join(ctx.workDir, 'context');
  cpSync(o.dockerfileDir, context, { recursive: true });
  if (!existsSync(join(context, 'Dockerfile'))) throw new GuestError('E_PIPELINE_INVALID', `vgpu.dockerfileDir ${o.dockerfileDir} has no Dockerfile`);
  copyFileSync(o.run, join(context, o.imageName));
  const buildArgs = ['--build-arg', `DRIVER_VERSION=${o.version}`];
  const digestFile = join(ctx.workDir, 'digest');
  if (o.engine === 'docker') {
    await runLogged(ctx.log, 'docker', ['buildx', 'build', ...buildArgs, '-t', o.reference, '--output', `type=oci,dest=${o.archive}`, context], { signal: ctx.signal });
    return (await runLogged(ctx.log, 'skopeo', ['inspect', '--format', '{{.Digest}}', `oci-archive:${o.archive}`], { capture: true, signal: ctx.signal })).trim();
  }
  await runLogged(ctx.log, o.engine, [o.engine === 'buildah' ? 'bud' : 'build', ...buildArgs, '-t', o.reference, context], { signal: ctx.signal });
  await runLogged(ctx.log, o.engine, ['push', '--digestfile', digestFile, o.reference, `oci-archive:${o.archive}`], { signal: ctx.signal });
  return readFileSync(digestFile, 'utf8').trim();
}
