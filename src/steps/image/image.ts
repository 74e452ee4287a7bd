import { copyFileSync, linkSync, mkdirSync, readdirSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GuestError } from '../../model/errors.js';
import { sha256Hex } from '../../model/json.js';
import type { ImageResult, RootfsTarballResult, VerityResult } from '../../model/results.js';
import { applyCleanupList, treeSize } from '../../sys/cleanup.js';
import { runLogged } from '../../sys/exec.js';
import { requireHostTools } from '../../sys/host-tools.js';
import { clampMtimes, packInitramfs, unpackRootfs } from '../../sys/rootfs-tar.js';
import type { StepContext, StepDefinition } from '../../model/step.js';
import { readRecipe } from '../rootfs/recipe.js';
import { kataConfig } from './kata-config.js';

type ImageParams = {
  format: 'ext4' | 'erofs' | 'initrd';
  marginMiB: number;
  sizeMiB: number | null;
  /** Present (true) only when asked: images without it keep their keys. */
  verity?: boolean;
  flavour: string;
  vendor: 'nvidia' | 'intel';
  sourceDate: number;
};
type ImageInputs = { rootfs: RootfsTarballResult };

/**
 * image: the guest disk image from the finished rootfs, without loop devices or mounts (ext4 with
 * mkfs.ext4 -d, erofs with mkfs.erofs, or a gzip'd cpio initrd), plus the Kata snippet.
 */
export const image: StepDefinition<ImageParams, ImageInputs, ImageResult> = {
  kind: 'image',
  version: 3,
  resources: { cpu: 1 },
  publish: '.',
  // early cutoff: a rootfs task that reran and made the same tarball leaves the image cached
  cutoff: { rootfs: { result: true } },
  run: (ctx) => makeImage(ctx),
};

/**
 * mkfs.ext4 -d (e2fsprogs 1.47.0) copies each file's ctime and atime, which are the times the tree
 * was unpacked: set every inode's times to the source date with debugfs, so the image is the same
 * bytes whenever it is built from the same inputs.
 */
async function normalizeExt4Times(ctx: StepContext<ImageParams, ImageInputs>, root: string, image: string, env: NodeJS.ProcessEnv): Promise<void> {
  const at = `@${ctx.sourceDate}`;
  const paths = ['/', ...listTree(root)].map(debugfsQuote);
  const fields = ['ctime', 'atime', 'crtime', 'mtime'];
  const lines = paths.flatMap((p) => [...fields.filter((f) => f !== 'mtime').map((f) => `sif ${p} ${f} ${at}`), ...fields.map((f) => `sif ${p} ${f}_extra 0`)]);
  const script = join(ctx.workDir, 'debugfs-times.cmd');
  writeFileSync(script, `${lines.join('\n')}\n`);
  await runLogged(ctx.log, 'debugfs', ['-w', '-f', script, image], { env, signal: ctx.signal, quiet: true });
}

/**
 * A path as one debugfs argument: double-quoted, a quote doubled (debugfs's parser reads `""` as
 * one quote, a backslash as itself). A newline cannot be written in a debugfs script at all.
 */
export function debugfsQuote(path: string): string {
  if (path.includes('\n')) {
    throw new GuestError('E_IMAGE_PATH', `the rootfs holds a path with a newline in its name (${JSON.stringify(path)}): mkfs.ext4's time fix-up cannot name it; remove it with the recipe's cleanup.list`);
  }
  return `"${path.replace(/"/g, '""')}"`;
}

/** Every path below a folder as the guest sees it (/etc/os-release), without following links. */
function listTree(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(root, rel), { withFileTypes: true })) {
    const p = `${rel}/${e.name}`;
    out.push(p);
    if (e.isDirectory()) out.push(...listTree(root, p));
  }
  return out;
}

/** How mkfs.ext4 -d says the file system is full. */
const OUT_OF_SPACE = /Could not allocate (block|inode)|No space left on device|Not enough space|too many inodes/i;

/** A UUID derived from the task key: the same inputs give the same file system. */
function stableUuid(seed: string): string {
  const h = sha256Hex(seed);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

async function makeImage(ctx: StepContext<ImageParams, ImageInputs>): Promise<ImageResult> {
  await requireHostTools('image');
  const p = ctx.params;
  const upstream = ctx.upstream.rootfs;
  const tarball = join(upstream.dir, upstream.result.tarball);
  const root = join(ctx.workDir, 'root');
  await unpackRootfs(ctx.log, tarball, root, ctx.signal);
  applyCleanupList(root, readRecipe(ctx.files.recipe as string).cleanup);
  await clampMtimes(ctx.log, root, ctx.sourceDate, ctx.signal);
  const contentBytes = treeSize(root);
  mkdirSync(join(ctx.outDir, 'rootfs'), { recursive: true });
  mkdirSync(join(ctx.outDir, 'kata'), { recursive: true });
  const name = p.format === 'initrd' ? `kata-containers-initrd-${p.flavour}.img` : `kata-containers-${p.flavour}.img`;
  const out = join(ctx.outDir, 'rootfs', name);
  const env = { ...process.env, SOURCE_DATE_EPOCH: String(ctx.sourceDate), E2FSPROGS_FAKE_TIME: String(ctx.sourceDate), LC_ALL: 'C' };
  const uuid = stableUuid(ctx.key);
  let sizeMiB: number | null = null;
  let verity: VerityResult | undefined;
  if (p.format === 'ext4') {
    // content plus a quarter for ext4's own metadata and inodes, plus the margin
    const needed = Math.ceil((contentBytes * 1.25) / 2 ** 20) + 16;
    sizeMiB = p.sizeMiB ?? needed + p.marginMiB;
    if (p.sizeMiB !== null && p.sizeMiB < needed) {
      throw new GuestError('E_IMAGE_TOO_SMALL', `image.sizeMiB ${p.sizeMiB} is too small for the rootfs (${(contentBytes / 2 ** 20).toFixed(0)} MiB of files need about ${needed} MiB): raise image.sizeMiB or remove it to size from the content`);
    }
    try {
      await runLogged(ctx.log, 'mkfs.ext4', ['-q', '-F', '-L', 'gpu-guest', '-U', uuid, '-E', `root_owner=0:0,hash_seed=${uuid}`, '-d', root, out, `${sizeMiB}M`], { env, signal: ctx.signal, explain: (tail) => tail.filter((l) => /mkfs|populate|Could not|No space|error/i.test(l)).slice(-5) });
    } catch (err) {
      // only a full file system is "too small"; any other mkfs failure keeps its own error and lines
      if (err instanceof GuestError && err.code === 'E_COMMAND_FAILED' && ctx.log.tail(40).some((l) => OUT_OF_SPACE.test(l))) {
        throw new GuestError('E_IMAGE_TOO_SMALL', `mkfs.ext4 could not fit the rootfs into ${sizeMiB} MiB: raise image.sizeMiB or image.marginMiB`, { cause: err });
      }
      throw err;
    }
    await normalizeExt4Times(ctx, root, out, env);
  } else if (p.format === 'erofs') {
    await runLogged(ctx.log, 'mkfs.erofs', ['-T', String(ctx.sourceDate), '-U', uuid, '--all-root', out, root], { env, signal: ctx.signal });
    if (p.verity) verity = await appendVerity(ctx, out, uuid);
  } else {
    await packInitramfs(ctx.log, root, out, ctx.signal);
  }
  // the tarball next to the image: a hard link to the upstream entry's file, not a copy
  const tarName = `kata-containers-${p.flavour}.tar`;
  try {
    linkSync(tarball, join(ctx.outDir, 'rootfs', tarName));
  } catch {
    copyFileSync(tarball, join(ctx.outDir, 'rootfs', tarName));
  }
  writeFileSync(join(ctx.outDir, 'kata', `configuration-${p.flavour}.toml`), kataConfig({ vendor: p.vendor, flavour: p.flavour, imageFile: name, initrd: p.format === 'initrd', kernelParams: verity?.kernelParams }));
  const imageBytes = statSync(out).size;
  ctx.log.info(`${name}: ${p.format}${verity ? ' with dm-verity' : ''}, ${(imageBytes / 2 ** 20).toFixed(1)} MiB image, rootfs content ${(contentBytes / 2 ** 20).toFixed(1)} MiB`);
  return { image: `rootfs/${name}`, format: p.format, sizeMiB, imageBytes, contentBytes, uuid, kata: `kata/configuration-${p.flavour}.toml`, kernelRelease: upstream.result.kernelRelease ?? null, ...(verity ? { verity } : {}) };
}

const VERITY_BLOCK = 4096;

/**
 * Appends a dm-verity hash tree to the image (veritysetup, no superblock, a salt derived from the
 * task key so the same inputs give the same root hash), proves it with `veritysetup verify`, and
 * returns the root hash and the kernel parameters that map the image through dm-verity as root
 * (CONFIG_DM_INIT, CONFIG_DM_VERITY in the guest kernel).
 */
async function appendVerity(ctx: StepContext<ImageParams, ImageInputs>, image: string, uuid: string): Promise<VerityResult> {
  await requireHostTools('image-verity');
  const dataBytes = Math.ceil(statSync(image).size / VERITY_BLOCK) * VERITY_BLOCK;
  truncateSync(image, dataBytes);
  const dataBlocks = dataBytes / VERITY_BLOCK;
  const salt = sha256Hex(`verity-salt:${ctx.key}`);
  const common = ['--hash=sha256', `--data-block-size=${VERITY_BLOCK}`, `--hash-block-size=${VERITY_BLOCK}`, `--data-blocks=${dataBlocks}`, `--hash-offset=${dataBytes}`, '--no-superblock', `--salt=${salt}`];
  const said = await runLogged(ctx.log, 'veritysetup', ['format', ...common, `--uuid=${uuid}`, image, image], { signal: ctx.signal, capture: true });
  const rootHash = /^Root hash:\s*([0-9a-f]{64})$/m.exec(said)?.[1];
  if (!rootHash) throw new GuestError('E_COMMAND_FAILED', `veritysetup format printed no root hash for ${image}`);
  await runLogged(ctx.log, 'veritysetup', ['verify', ...common, image, image, rootHash], { signal: ctx.signal });
  const sectors = dataBytes / 512;
  const table = `0 ${sectors} verity 1 /dev/vda /dev/vda ${VERITY_BLOCK} ${VERITY_BLOCK} ${dataBlocks} ${dataBlocks} sha256 ${rootHash} ${salt}`;
  const kernelParams = `dm-mod.create="gpu-guest-root,,,ro,${table}" root=/dev/dm-0 rootfstype=erofs ro`;
  ctx.log.info(`dm-verity root hash ${rootHash} over ${dataBlocks} blocks`);
  return { rootHash, salt, algorithm: 'sha256', dataBlocks, dataBlockSize: VERITY_BLOCK, hashBlockSize: VERITY_BLOCK, hashStartBlock: dataBlocks, kernelParams };
}
