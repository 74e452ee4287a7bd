import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { findOnPath } from '../../sys/which.js';
import { GuestError } from '../../model/errors.js';
import { runLogged } from '../../sys/exec.js';
import type { StepContext } from '../../model/step.js';

/**
 * `vgpu.engine: buildah | podman | docker`: builds the user's Dockerfile folder (NVIDIA's
 * vgpu-manager/<os>) with DRIVER_VERSION as build argument, instead of the built-in builder, and
 * exports it as an oci-archive. Returns the manifest digest.
 */
export async function buildWithEngine(
  ctx: StepContext,
  o: { engine: 'buildah' | 'podman' | 'docker'; dockerfileDir?: string; run: string; imageName: string; version: string; reference: string; archive: string; layoutDir: string },
): Promise<string> {
  if (!o.dockerfileDir) throw new GuestError('E_PIPELINE_INVALID', `vgpu.engine ${o.engine} builds a Dockerfile folder: set vgpu.dockerfileDir (NVIDIA's vgpu-manager/<os> folder)`);
  if (!(await findOnPath(o.engine))) throw new GuestError('E_MISSING_TOOL', `vgpu.engine is ${o.engine}, but ${o.engine} is not installed (install it, or use the built-in builder: vgpu.engine=builtin)`);
  const context = join(ctx.workDir, 'context');
  cpSync(o.dockerfileDir, context, { recursive: true });
  if (!existsSync(join(context, 'Dockerfile'))) throw new GuestError('E_PIPELINE_INVALID', `vgpu.dockerfileDir ${o.dockerfileDir} has no Dockerfile`);
  copyFileSync(o.run, join(context, o.imageName));
  const buildArgs = ['--build-arg', `DRIVER_VERSION=${o.version}`];
  const digestFile = join(ctx.workDir, 'digest');
  if (o.engine === 'docker') {
    await runLogged(ctx.log, 'docker', ['buildx', 'build', ...buildArgs, '-t', o.reference, '--output', `type=oci,dest=${o.archive},name=${o.reference}`, context], { signal: ctx.signal });
  } else {
    // daemonless by default: vfs storage and chroot isolation work as root without overlay or a user namespace
    const env = { ...process.env, STORAGE_DRIVER: process.env.STORAGE_DRIVER ?? 'vfs', BUILDAH_ISOLATION: process.env.BUILDAH_ISOLATION ?? 'chroot' };
    await runLogged(ctx.log, o.engine, [o.engine === 'buildah' ? 'bud' : 'build', ...buildArgs, '-t', o.reference, context], { signal: ctx.signal, env });
    // the tag as the layout's ref.name annotation, as the built-in builder writes it (push reads it)
    await runLogged(ctx.log, o.engine, ['push', '--digestfile', digestFile, o.reference, `oci-archive:${o.archive}:${o.reference.split(':').pop()}`], { signal: ctx.signal, env });
  }
  // the same layout/ folder the built-in builder writes, so push reads one form whatever built the image
  mkdirSync(o.layoutDir, { recursive: true });
  await runLogged(ctx.log, 'tar', ['-xf', o.archive, '-C', o.layoutDir, '--no-same-owner'], { signal: ctx.signal });
  if (!existsSync(join(o.layoutDir, 'index.json'))) throw new GuestError('E_COMMAND_FAILED', `${o.engine} wrote ${o.archive}, but it holds no OCI image layout (no index.json)`);
  return o.engine === 'docker'
    ? (await runLogged(ctx.log, 'skopeo', ['inspect', '--format', '{{.Digest}}', `oci-archive:${o.archive}`], { capture: true, signal: ctx.signal })).trim()
    : readFileSync(digestFile, 'utf8').trim();
}
