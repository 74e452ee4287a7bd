import { join } from 'node:path';
import { findOnPath } from '../../sys/which.js';
import type { RootfsResult } from '../../model/results.js';
import { hostMirror } from '../../sys/apt-sources.js';
import { requireNetwork } from '../../sys/offline.js';
import { runLogged } from '../../sys/exec.js';
import { requireHostTools } from '../../sys/host-tools.js';
import { packRootfs } from '../../sys/rootfs-tar.js';
import type { StepContext, StepDefinition } from '../../model/step.js';
import { readRecipe } from './recipe.js';

type RootfsParams = {
  distro: string;
  suite: string;
  mirror: string;
  components: string[];
  variant: string;
  packages: string[];
  extraPackages: string[];
  sourceDate: number;
};

/**
 * rootfs: a Debian or Ubuntu root filesystem from a mirror with mmdebstrap (debootstrap when
 * mmdebstrap is absent), as a reproducible tarball. Depends on no kernel task.
 */
export const rootfs: StepDefinition<RootfsParams, Record<string, never>, RootfsResult> = {
  kind: 'rootfs',
  version: 1,
  resources: { cpu: 1 },
  // `host` becomes the host's actual mirror URL, which is part of the key
  resolve: async (params) => ({ ...params, mirror: params.mirror === 'host' ? hostMirror(params.distro) : params.mirror }),
  run: (ctx) => createRootfs(ctx),
};

async function createRootfs(ctx: StepContext<RootfsParams>): Promise<RootfsResult> {
  await requireHostTools('rootfs');
  const p = ctx.params;
  requireNetwork(ctx.network, `the ${p.distro} ${p.suite} rootfs (mmdebstrap)`, [p.mirror], 'build the rootfs once with the network into this cache, or set rootfs.mirror to a file:// mirror');
  const recipe = readRecipe(ctx.files.recipe as string);
  const packages = [...new Set([...recipe.basePackages, ...p.packages, ...p.extraPackages])].sort();
  const out = join(ctx.outDir, 'rootfs.tar');
  const env = { ...process.env, SOURCE_DATE_EPOCH: String(ctx.sourceDate), LC_ALL: 'C' };
  const explain = (tail: string[]) => mirrorErrors(tail, p);
  const builder = (await findOnPath('mmdebstrap')) ? 'mmdebstrap' : 'debootstrap';
  if (builder === 'mmdebstrap') {
    const hooks = [
      // the host's identity must not end up in a guest image
      'rm -f "$1/etc/hostname" "$1/etc/resolv.conf"',
      ...(recipe.filesDir ? [`sync-in ${recipe.filesDir} /`] : []),
    ];
    await runLogged(
      ctx.log,
      'mmdebstrap',
      [
        `--variant=${p.variant}`,
        `--components=${p.components.join(',')}`,
        ...(packages.length ? [`--include=${packages.join(',')}`] : []),
        `--keyring=${recipe.keyring}`,
        '--aptopt=Acquire::Languages "none"',
        ...hooks.map((h) => `--customize-hook=${h}`),
        p.suite,
        out,
        p.mirror,
      ],
      { env, signal: ctx.signal, explain },
    );
  } else {
    const dir = join(ctx.workDir, 'root');
    await runLogged(ctx.log, 'debootstrap', [`--variant=${p.variant === 'minbase' ? 'minbase' : 'buildd'}`, `--components=${p.components.join(',')}`, ...(packages.length ? [`--include=${packages.join(',')}`] : []), `--keyring=${recipe.keyring}`, p.suite, dir, p.mirror], { env, signal: ctx.signal, explain });
    await runLogged(ctx.log, 'rm', ['-f', join(dir, 'etc/hostname'), join(dir, 'etc/resolv.conf')]);
    if (recipe.filesDir) await runLogged(ctx.log, 'cp', ['-a', `${recipe.filesDir}/.`, dir]);
    await packRootfs(ctx.log, dir, out, ctx.sourceDate, ctx.signal);
  }
  return { distro: p.distro, suite: p.suite, mirror: p.mirror, packages, builder, tarball: 'rootfs.tar' };
}

/** How apt says it never reached the mirror at all. */
const UNREACHABLE = /Could not connect|Connection refused|Temporary failure resolving|Could not resolve|No route to host|Network is unreachable|Connection timed out|Failed to connect/i;

/**
 * mmdebstrap and debootstrap report a missing suite and an unreachable mirror in several ways, and
 * an unreachable mirror also mentions the suite's Release file: say which it is, once, plainly.
 */
function mirrorErrors(tail: string[], p: RootfsParams): string[] {
  const lines = tail.filter((l) => /^(E:|W: Failed|Err:)|Failed getting release file|does not have a Release file|404\s+Not Found|Unable to locate package|unable to fetch|Couldn't find these debs/.test(l) || UNREACHABLE.test(l));
  const unreachable = lines.find((l) => UNREACHABLE.test(l));
  const noSuite = !unreachable && lines.some((l) => /Release|404/.test(l) && l.includes(p.suite));
  const head = unreachable
    ? [`the mirror ${p.mirror} could not be reached (${unreachable.replace(/^.*?((Could not|Temporary|No route|Network|Connection|Failed to connect).*)$/i, '$1').trim()}): check rootfs.mirror and the network`]
    : noSuite
      ? [`the mirror ${p.mirror} has no suite ${p.suite} (check rootfs.suite and rootfs.mirror)`]
      : [];
  return [...head, ...[...new Set(lines)].slice(-8)];
}
