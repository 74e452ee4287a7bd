// The catalogue of bad inputs: each one fails fast (never after a kernel build), with its own error
// code and exit status, a message that names the input and says what to do, and nothing partial
// left in the out folder or the cache.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { sha256File } from '../src/sys/hash.js';
import { buildDriverRun, type DriverRun } from './fixtures/driver.js';
import { buildToolkitDebs } from './fixtures/toolkit.js';
import { cliBin, FAKE_SHA, repoRoot, suiteDir, writePipeline } from './helpers.js';

let fx: string;
let driver: DriverRun;
let vgpuRun: DriverRun;
let debs: string;
let skewedDebs: string;
let threeDebs: string;
let textTarball: string;
let escapingTarball: { file: string; sha256: string };
let emptyFolder: string;
let badFragment: string;
let bigPipeline: string;
let aliasBomb: string;
let listPipeline: string;
let notMakeself: { file: string; sha256: string };

beforeAll(async () => {
  fx = suiteDir('gpu-guest-catalogue-');
  driver = buildDriverRun(fx, '550.127.05');
  vgpuRun = buildDriverRun(fx, '550.54.16', { suffix: '-vgpu-kvm' });
  debs = buildToolkitDebs(join(fx, 'ok'), '1.17.3-1');
  skewedDebs = buildToolkitDebs(join(fx, 'skew'), '1.17.3-1', { 'libnvidia-container1': '1.16.0-1' });
  threeDebs = buildToolkitDebs(join(fx, 'three'), '1.17.3-1');
  rmSync(join(threeDebs, 'libnvidia-container-tools_1.17.3-1_amd64.deb'));
  textTarball = join(fx, 'linux-6.1.1.tar.xz');
  writeFileSync(textTarball, '<html>404 Not Found</html>\n');
  const evil = join(fx, 'evil', 'linux-6.1.1');
  mkdirSync(evil, { recursive: true });
  writeFileSync(join(evil, 'Makefile'), 'VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 1\n');
  symlinkSync('../../../../../../etc', join(evil, 'include'));
  const evilFile = join(fx, 'linux-evil.tar.xz');
  execFileSync('tar', ['-cJf', evilFile, '-C', join(fx, 'evil'), 'linux-6.1.1']);
  escapingTarball = { file: evilFile, sha256: await sha256File(evilFile) };
  emptyFolder = join(fx, 'empty-fragments');
  mkdirSync(emptyFolder);
  badFragment = join(fx, 'bad.conf');
  writeFileSync(badFragment, 'CONFIG_PCI=y\nCONFIG_FOO=maybe\n');
  bigPipeline = join(fx, 'big.yaml');
  writeFileSync(bigPipeline, `# ${'x'.repeat(2 << 20)}\n`);
  aliasBomb = join(fx, 'bomb.yaml');
  const levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
  for (let i = 1; i < 9; i++) levels.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(9).fill(`*${String.fromCharCode(96 + i)}`).join(',')}]`);
  writeFileSync(aliasBomb, `${levels.join('\n')}\nname: bomb\n`);
  listPipeline = join(fx, 'list.yaml');
  writeFileSync(listPipeline, '- name: x\n');
  const nm = join(fx, 'NVIDIA-Linux-x86_64-550.127.05-notmakeself.run');
  writeFileSync(nm, '#!/bin/sh\necho I am not an archive\n');
  notMakeself = { file: nm, sha256: await sha256File(nm) };
}, 300_000);

interface Case {
  name: string;
  /** The command line after `gpu-guest`, given a fresh folder for the case. */
  args: (dir: string) => string[];
  code: string;
  exit: number;
  /** The message: names the input, says what to do. */
  message: RegExp;
  cwd?: (dir: string) => string;
  /** Environment variables of the run, beside the test's own. */
  env?: NodeJS.ProcessEnv;
}

const intel = (dir: string, kernel = '  version: "6.1"\n  source:\n    tarball: apt:linux-source-6.1\n', extra = '') => writePipeline(dir, 'intel', kernel, extra);
const nvidia = (dir: string, extra: string[] = []) => ['--pipeline', writePipeline(dir, 'nvidia', '  version: "6.1"\n'), '--set', `driver.path=${driver.file}`, '--set', `driver.sha256=${driver.sha256}`, '--set', `toolkit.debs=[${debs}]`, ...extra];
const vgpu = (dir: string, vgpuLines: string) => {
  const file = join(dir, 'vgpu.yaml');
  writeFileSync(file, `name: vgpu-cat\nvendor: nvidia-vgpu\nrootfs:\n  distro: debian\n  suite: bookworm\nvgpu:\n${vgpuLines}`);
  return ['--pipeline', file];
};
const tarballKernel = (file: string, sha: string) => `  version: "6.1.1"\n  sha256: ${sha}\n  source:\n    tarball: ${file}\n`;

const cases: Case[] = [
  // the command line and the pipeline file
  { name: 'an unknown vendor', args: () => ['plan', '--vendor', 'amd'], code: 'E_UNKNOWN_VENDOR', exit: 2, message: /unknown vendor 'amd' \(pipelines available: intel, nvidia/ },
  { name: 'a missing pipeline file', args: (d) => ['plan', '--pipeline', join(d, 'nope.yaml')], code: 'E_PIPELINE_NOT_FOUND', exit: 2, message: /pipeline file .*nope\.yaml does not exist \(check the path/ },
  { name: 'a folder as the pipeline file', args: (d) => ['plan', '--pipeline', d], code: 'E_PIPELINE_INVALID', exit: 2, message: /pipeline file .* is a directory \(give --pipeline a \.yaml file\)/ },
  { name: '/dev/zero as the pipeline file', args: () => ['plan', '--pipeline', '/dev/zero'], code: 'E_PIPELINE_INVALID', exit: 2, message: /pipeline file \/dev\/zero is not a regular file/ },
  { name: 'a 2 MiB pipeline file', args: () => ['plan', '--pipeline', bigPipeline], code: 'E_PIPELINE_INVALID', exit: 2, message: /big\.yaml is \d+ bytes; a pipeline is at most 1048576/ },
  { name: 'a YAML alias bomb', args: () => ['plan', '--pipeline', aliasBomb], code: 'E_PIPELINE_SYNTAX', exit: 2, message: /bomb\.yaml: .*alias.* \(a pipeline has no need for that many aliases\)/i },
  { name: 'a YAML syntax error', args: (d) => ['plan', '--pipeline', (writeFileSync(join(d, 's.yaml'), 'name: [x\n'), join(d, 's.yaml'))], code: 'E_PIPELINE_SYNTAX', exit: 2, message: /s\.yaml:\d+:\d+: YAML syntax error/ },
  { name: 'a list at the top of the pipeline', args: () => ['plan', '--pipeline', listPipeline], code: 'E_PIPELINE_INVALID', exit: 2, message: /list\.yaml: expected a mapping of keys/ },
  { name: 'an unknown key', args: (d) => ['plan', '--pipeline', intel(d, undefined, 'colour: blue\n')], code: 'E_PIPELINE_INVALID', exit: 2, message: /colour: unknown key \(expected one of/ },
  { name: 'both --vendor and --pipeline', args: (d) => ['plan', '--vendor', 'intel', '--pipeline', intel(d)], code: 'E_USAGE', exit: 2, message: /give either --vendor or --pipeline, not both/ },
  { name: '--set without =', args: () => ['plan', '--vendor', 'intel', '--set', 'kernel.version'], code: 'E_SET_PATH', exit: 2, message: /--set kernel\.version: expected key\.path=value/ },
  { name: '--set of an unknown key', args: () => ['plan', '--vendor', 'intel', '--set', 'kernal.version=6.1'], code: 'E_SET_PATH', exit: 2, message: /--set kernal\.version=6\.1: no key 'kernal' at the top level \(known keys/ },
  { name: '--set past the end of a list', args: () => ['plan', '--vendor', 'intel', '--set', 'kernel.fragments[5]=x.conf'], code: 'E_SET_PATH', exit: 2, message: /--set kernel\.fragments\[5\]=x\.conf: kernel\.fragments has 1 item\(s\); index \[5\] would leave a gap/ },
  { name: '--set of text for a number', args: () => ['plan', '--vendor', 'intel', '--set', 'image.marginMiB=lots'], code: 'E_SET_PATH', exit: 2, message: /--set image\.marginMiB=lots: expected a number, found 'lots'/ },
  { name: 'GPU_GUEST_KERNEL_SEED=no', args: () => ['build', '--vendor', 'intel'], env: { GPU_GUEST_KERNEL_SEED: 'no' }, code: 'E_USAGE', exit: 2, message: /GPU_GUEST_KERNEL_SEED=no: expected 0 or 1 \(or unset it\)/ },
  { name: 'GPU_GUEST_CCACHE=yes', args: () => ['build', '--vendor', 'intel'], env: { GPU_GUEST_CCACHE: 'yes' }, code: 'E_USAGE', exit: 2, message: /GPU_GUEST_CCACHE=yes: expected 0 or 1 \(or unset it\)/ },
  { name: '--jobs 0', args: () => ['build', '--vendor', 'intel', '--jobs', '0'], code: 'E_USAGE', exit: 2, message: /--jobs 0: expected a whole number of 1 or more/ },
  { name: 'a verify --kernel-arg with a blank', args: () => ['verify', '--vendor', 'intel', '--kernel-arg', 'quiet splash'], code: 'E_USAGE', exit: 2, message: /--kernel-arg 'quiet splash': expected one kernel parameter, name or name=value without blanks or quotes \(repeat the flag for more\)/ },
  { name: 'an unknown task for --until', args: () => ['plan', '--vendor', 'intel', '--until', 'kernel'], code: 'E_UNKNOWN_TASK', exit: 2, message: /--until kernel: no such task in intel \(tasks: kernel-source/ },
  { name: '--only with inputs not built', args: () => ['plan', '--vendor', 'intel', '--only', 'kernel-build'], code: 'E_NOT_CACHED', exit: 2, message: /--only kernel-build: its inputs kernel-source, kernel-config are not cached \(run gpu-guest build --until kernel-source first\)/ },
  { name: 'a cache folder below a file', args: (d) => ['plan', '--vendor', 'intel', '--cache-dir', (writeFileSync(join(d, 'f'), ''), join(d, 'f/cache'))], code: 'E_CACHE_UNWRITABLE', exit: 2, message: /cache folder .*f\/cache is not writable \(ENOTDIR\): pass --cache-dir DIR/ },
  { name: 'a cache folder in /proc', args: () => ['plan', '--vendor', 'intel', '--cache-dir', '/proc/gpu-guest'], code: 'E_CACHE_UNWRITABLE', exit: 2, message: /cache folder \/proc\/gpu-guest is not writable \(\/proc is on a kernel pseudo file system\)/ },
  { name: 'an out folder in /proc', args: () => ['build', '--vendor', 'intel', '--out-dir', '/proc/gpu-guest'], code: 'E_OUT_UNWRITABLE', exit: 2, message: /output folder \/proc\/gpu-guest\/intel is not writable \(\/proc is on a kernel pseudo file system\): pass --out-dir DIR/ },
  { name: 'clean of the current folder', args: () => ['clean', '--out-dir', '.'], cwd: (d) => d, code: 'E_CLEAN_REFUSED', exit: 2, message: /refusing to remove .*: it holds the current folder/ },
  { name: 'clean --cache of a folder that is no cache', args: (d) => ['clean', '--cache', '--cache-dir', (mkdirSync(join(d, 'photos')), join(d, 'photos')), '--out-dir', join(d, 'none')], code: 'E_CLEAN_REFUSED', exit: 2, message: /refusing to empty .*photos: it is not a gpu-guest cache/ },
  // the kernel
  { name: 'kernel.version banana (apt source)', args: () => ['plan', '--vendor', 'intel', '--set', 'kernel.version=banana'], code: 'E_PIPELINE_INVALID', exit: 2, message: /--set kernel\.version=banana: kernel\.version 'banana' is neither a version \(6\.1\.55\) nor a range/ },
  { name: 'kernel.version banana (mirrors)', args: (d) => ['plan', '--pipeline', intel(d, '  version: "banana"\n  source: {}\n')], code: 'E_PIPELINE_INVALID', exit: 2, message: /:\d+:\d+: kernel\.version 'banana' is neither a version/ },
  { name: 'a missing fragment in the pipeline', args: () => ['plan', '--vendor', 'intel', '--set', 'kernel.fragments=[./nope.conf]'], code: 'E_PIPELINE_INVALID', exit: 2, message: /kernel\.fragments\[0\]: .*nope\.conf does not exist \(fix the path/ },
  { name: 'a missing --fragment', args: (d) => ['plan', '--vendor', 'intel', '--fragment', join(d, 'gone.conf')], code: 'E_FRAGMENT_NOT_FOUND', exit: 2, message: /fragment .*gone\.conf does not exist \(fix the pipeline's kernel\.fragments or --fragment\)/ },
  { name: 'an empty fragment folder', args: () => ['plan', '--vendor', 'intel', '--fragment', emptyFolder], code: 'E_FRAGMENT_NOT_FOUND', exit: 2, message: /fragment folder .*empty-fragments holds no \*\.conf file/ },
  { name: 'a fragment line CONFIG_FOO=maybe', args: () => ['plan', '--vendor', 'intel', '--fragment', badFragment], code: 'E_FRAGMENT_SYNTAX', exit: 2, message: /bad\.conf:2: / },
  { name: 'a local tarball whose sha256 differs from its pin', args: (d) => ['plan', '--pipeline', intel(d, tarballKernel(escapingTarball.file, FAKE_SHA))], code: 'E_CHECKSUM_MISMATCH', exit: 1, message: /kernel tarball linux-evil\.tar\.xz: sha256 is [0-9a-f]{64}, kernel\.sha256 says c{64} \(check the file or the pin\)/ },
  { name: 'a local tarball that is an HTML page', args: (d) => ['plan', '--pipeline', intel(d, `  version: "6.1.1"\n  source:\n    tarball: ${textTarball}\n`)], code: 'E_NOT_KERNEL_TREE', exit: 1, message: /kernel tarball linux-6\.1\.1\.tar\.xz is not a tar archive \(it starts with text\)/ },
  { name: 'a tarball with a link out of the tree', args: (d) => ['build', '--until', 'kernel-source', '--pipeline', intel(d, tarballKernel(escapingTarball.file, escapingTarball.sha256))], code: 'E_ARCHIVE_UNSAFE', exit: 1, message: /linux-evil\.tar\.xz holds 1 link\(s\) pointing outside the extracted tree/ },
  { name: 'a tarball URL without a sha256', args: (d) => ['plan', '--pipeline', intel(d, '  version: "6.1"\n  source:\n    tarball: https://mirror.example/linux-6.1.1.tar.xz\n')], code: 'E_PIPELINE_INVALID', exit: 2, message: /kernel\.source\.tarball https:\/\/mirror\.example\/linux-6\.1\.1\.tar\.xz is a URL: pin its kernel\.sha256/ },
  { name: 'both mirrors and a tarball', args: (d) => ['plan', '--pipeline', intel(d, '  version: "6.1"\n  source:\n    tarball: apt:linux-source-6.1\n    mirrors: [https://mirror.example/pub]\n')], code: 'E_PIPELINE_INVALID', exit: 2, message: /kernel\.source: give either mirrors or tarball, not both/ },
  { name: 'a local version without its dash', args: () => ['plan', '--vendor', 'intel', '--set', 'kernel.localVersion=intel'], code: 'E_PIPELINE_INVALID', exit: 2, message: /kernel\.localVersion: expected a value matching/ },
  // the root filesystem
  { name: 'a package named $(id)', args: () => ['plan', '--vendor', 'intel', '--set', 'rootfs.packages=["$(id)"]'], code: 'E_PIPELINE_INVALID', exit: 2, message: /rootfs\.packages\[0\]: expected a Debian package name .*found string "\$\(id\)"/ },
  { name: 'a package name with ;', args: () => ['plan', '--vendor', 'intel', '--set', 'rootfs.packages=["gcc;reboot"]'], code: 'E_PIPELINE_INVALID', exit: 2, message: /rootfs\.packages\[0\]: expected a Debian package name/ },
  { name: 'a suite with a slash', args: () => ['plan', '--vendor', 'intel', '--set', 'rootfs.suite=bookworm/updates'], code: 'E_PIPELINE_INVALID', exit: 2, message: /rootfs\.suite: expected a value matching/ },
  { name: 'a component with $', args: () => ['plan', '--vendor', 'intel', '--set', 'rootfs.components=[main, "$HOME"]'], code: 'E_PIPELINE_INVALID', exit: 2, message: /rootfs\.components\[1\]: expected a Debian archive component/ },
  { name: 'a file:// mirror that does not exist', args: (d) => ['plan', '--vendor', 'intel', '--set', `rootfs.mirror=file://${d}/no-mirror`], code: 'E_PIPELINE_INVALID', exit: 2, message: /rootfs\.mirror file:\/\/.*no-mirror: no Debian repository there \(no dists\/ folder\)/ },
  { name: 'an unknown distro', args: () => ['plan', '--vendor', 'intel', '--set', 'rootfs.distro=fedora'], code: 'E_PIPELINE_INVALID', exit: 2, message: /rootfs\.distro: no recipe for 'fedora' \(known: debian, ubuntu/ },
  // the NVIDIA driver and toolkit
  { name: 'the nvidia pipeline without a driver sha256', args: () => ['plan', '--vendor', 'nvidia'], code: 'E_PIPELINE_INVALID', exit: 2, message: /driver\.sha256: required with driver\.source: run/ },
  { name: 'driver.source: apt without packages', args: () => ['plan', '--vendor', 'nvidia', '--set', 'driver.source=apt'], code: 'E_PIPELINE_INVALID', exit: 2, message: /driver\.packages: required with driver\.source: apt: the driver's packages pinned as name=version/ },
  { name: 'driver.source: apt with an unpinned package', args: () => ['plan', '--vendor', 'nvidia', '--set', 'driver.source=apt', '--set', 'driver.packages=[nvidia-kernel-dkms=550.127.05-1, nvidia-smi]'], code: 'E_PIPELINE_INVALID', exit: 2, message: /driver\.packages: nvidia-smi not pinned: write name=version/ },
  { name: 'driver.source: apt without a DKMS package', args: () => ['plan', '--vendor', 'nvidia', '--set', 'driver.source=apt', '--set', 'driver.packages=[nvidia-smi=550.127.05-1]'], code: 'E_PIPELINE_INVALID', exit: 2, message: /driver\.packages: name exactly one DKMS package \(…-dkms=version\) that builds the kernel modules, not none/ },
  { name: 'driver.source: apt with a DKMS package of another version', args: () => ['plan', '--vendor', 'nvidia', '--set', 'driver.source=apt', '--set', 'driver.packages=[nvidia-kernel-dkms=535.261.03-1]'], code: 'E_PIPELINE_INVALID', exit: 2, message: /driver\.packages: nvidia-kernel-dkms=535\.261\.03-1 builds driver 535\.261\.03, but driver\.version says 550\.127\.05/ },
  { name: 'driver.source: apt with a .run pin', args: () => ['plan', '--vendor', 'nvidia', '--set', 'driver.source=apt', '--set', `driver.sha256=${FAKE_SHA}`, '--set', 'driver.packages=[nvidia-kernel-dkms=550.127.05-1]'], code: 'E_PIPELINE_INVALID', exit: 2, message: /driver\.sha256: not read with driver\.source: apt, which installs packages and no \.run/ },
  { name: 'driver.packages with driver.source: run', args: (d) => ['plan', ...nvidia(d, ['--set', 'driver.packages=[nvidia-kernel-dkms=550.127.05-1]'])], code: 'E_PIPELINE_INVALID', exit: 2, message: /driver\.packages: only read with driver\.source: apt/ },
  { name: 'a driver path that does not exist', args: (d) => ['plan', ...nvidia(d, ['--set', `driver.path=${d}/NVIDIA-Linux-x86_64-550.127.05.run`])], code: 'E_PIPELINE_INVALID', exit: 2, message: /driver\.path: .*NVIDIA-Linux-x86_64-550\.127\.05\.run does not exist/ },
  { name: 'a driver .run that is no makeself archive', args: (d) => ['plan', ...nvidia(d, ['--set', `driver.path=${notMakeself.file}`, '--set', `driver.sha256=${notMakeself.sha256}`])], code: 'E_NOT_MAKESELF', exit: 1, message: /driver NVIDIA-Linux-x86_64-550\.127\.05-notmakeself\.run is not a self-extracting NVIDIA \.run archive/ },
  { name: 'a driver .run whose sha256 differs from its pin', args: (d) => ['plan', ...nvidia(d, ['--set', `driver.sha256=${FAKE_SHA}`])], code: 'E_CHECKSUM_MISMATCH', exit: 1, message: /driver NVIDIA-Linux-x86_64-550\.127\.05\.run: sha256 is [0-9a-f]{64}, the pipeline pins c{64}/ },
  { name: 'driver.moduleSource without driver.source: source', args: (d) => ['plan', ...nvidia(d, ['--set', `driver.moduleSource.sha256=${FAKE_SHA}`])], code: 'E_PIPELINE_INVALID', exit: 2, message: /driver\.moduleSource is only read with driver\.source: source/ },
  { name: 'driver.moduleSource naming both mirrors and a url', args: (d) => ['plan', ...nvidia(d, ['--set', 'driver.source=source', '--set', 'driver.moduleSource.url=https://example.invalid/x.tar.xz', '--set', 'driver.moduleSource.mirrors=[https://example.invalid]', '--set', `driver.moduleSource.sha256=${FAKE_SHA}`])], code: 'E_PIPELINE_INVALID', exit: 2, message: /driver\.moduleSource: give one of mirrors, url or path, not mirrors and url/ },
  { name: 'a driver.moduleSource path whose sha256 differs from its pin', args: (d) => ['plan', ...nvidia(d, ['--set', 'driver.source=source', '--set', `driver.moduleSource.path=${textTarball}`, '--set', `driver.moduleSource.sha256=${FAKE_SHA}`])], code: 'E_CHECKSUM_MISMATCH', exit: 1, message: /driver\.moduleSource linux-6\.1\.1\.tar\.xz: sha256 is [0-9a-f]{64}, driver\.moduleSource\.sha256 says c{64}/ },
  { name: 'a driver.source that does not exist', args: (d) => ['plan', ...nvidia(d, ['--set', 'driver.source=dkms'])], code: 'E_PIPELINE_INVALID', exit: 2, message: /driver\.source: .*(run|source)/ },
  { name: 'a driver .run of another version', args: (d) => ['plan', ...nvidia(d, ['--set', 'driver.version=535.261.03'])], code: 'E_PIPELINE_INVALID', exit: 2, message: /driver NVIDIA-Linux-x86_64-550\.127\.05\.run is version 550\.127\.05, but driver\.version says 535\.261\.03/ },
  { name: 'the shipped toolkit default debs: []', args: (d) => ['plan', ...nvidia(d, ['--set', 'toolkit.debs=[]'])], code: 'E_PIPELINE_INVALID', exit: 2, message: /toolkit: give toolkit\.debs \(local \.deb files or folders\) or toolkit\.repository/ },
  { name: 'three of the four toolkit packages', args: (d) => ['plan', ...nvidia(d, ['--set', `toolkit.debs=[${threeDebs}]`])], code: 'E_TOOLKIT_INCOMPLETE', exit: 1, message: /toolkit\.debs lacks libnvidia-container-tools/ },
  { name: 'toolkit packages of two versions', args: (d) => ['plan', ...nvidia(d, ['--set', `toolkit.debs=[${skewedDebs}]`])], code: 'E_TOOLKIT_VERSION', exit: 1, message: /the toolkit packages must all be version 1\.17\.3-1 \(toolkit\.version\)/ },
  // the vGPU manager image
  { name: 'a vGPU .run name that does not parse', args: (d) => ['plan', ...vgpu(d, `  path: ${driver.file}\n  sha256: ${driver.sha256}\n  osTag: debian12\n  registry: registry.example.com/nvidia\n`)], code: 'E_VGPU_NAME', exit: 2, message: /NVIDIA-Linux-x86_64-550\.127\.05\.run is not a vGPU host driver name/ },
  { name: 'an unknown vGPU os tag', args: (d) => ['plan', ...vgpu(d, `  path: ${vgpuRun.file}\n  sha256: ${vgpuRun.sha256}\n  osTag: windows11\n  registry: registry.example.com/nvidia\n`)], code: 'E_PIPELINE_INVALID', exit: 2, message: /vgpu\.osTag 'windows11' is not one the GPU Operator uses/ },
  { name: 'an os tag for another distribution than the base', args: (d) => ['plan', ...vgpu(d, `  path: ${vgpuRun.file}\n  sha256: ${vgpuRun.sha256}\n  osTag: ubuntu24.04\n  registry: registry.example.com/nvidia\n`)], code: 'E_PIPELINE_INVALID', exit: 2, message: /vgpu\.osTag ubuntu24\.04 needs a ubuntu noble base, but rootfs is debian bookworm \(make rootfs\.distro and rootfs\.suite match/ },
  { name: 'vgpu.hostKernels with an engine that builds a Dockerfile', args: (d) => ['plan', ...vgpu(d, `  path: ${vgpuRun.file}\n  sha256: ${vgpuRun.sha256}\n  osTag: debian12\n  registry: registry.example.com/nvidia\n  engine: buildah\n  dockerfileDir: ${d}\n  hostKernels: [6.1.0-56-amd64]\n`)], code: 'E_PIPELINE_INVALID', exit: 2, message: /vgpu\.hostKernels builds the modules in the image's Debian or Ubuntu base with the built-in builder/ },
  { name: 'vgpu.hostKernels naming a release twice', args: (d) => ['plan', ...vgpu(d, `  path: ${vgpuRun.file}\n  sha256: ${vgpuRun.sha256}\n  osTag: debian12\n  registry: registry.example.com/nvidia\n  hostKernels: [6.1.0-56-amd64, 6.1.0-56-amd64]\n`)], code: 'E_PIPELINE_INVALID', exit: 2, message: /vgpu\.hostKernels names 6\.1\.0-56-amd64 twice/ },
  { name: 'vgpu.hostKernels with something that is no kernel release', args: (d) => ['plan', ...vgpu(d, `  path: ${vgpuRun.file}\n  sha256: ${vgpuRun.sha256}\n  osTag: debian12\n  registry: registry.example.com/nvidia\n  hostKernels: ["../etc"]\n`)], code: 'E_PIPELINE_INVALID', exit: 2, message: /hostKernels/ },
  { name: 'a registry with a scheme', args: (d) => ['plan', ...vgpu(d, `  path: ${vgpuRun.file}\n  sha256: ${vgpuRun.sha256}\n  osTag: debian12\n  registry: https://registry.example.com\n`)], code: 'E_PIPELINE_INVALID', exit: 2, message: /vgpu\.registry 'https:\/\/registry\.example\.com' is not a registry reference/ },
  { name: 'a vGPU .run whose sha256 differs from its pin', args: (d) => ['plan', ...vgpu(d, `  path: ${vgpuRun.file}\n  sha256: ${FAKE_SHA}\n  osTag: debian12\n  registry: registry.example.com/nvidia\n`)], code: 'E_CHECKSUM_MISMATCH', exit: 1, message: /vGPU driver NVIDIA-Linux-x86_64-550\.54\.16-vgpu-kvm\.run: sha256 is [0-9a-f]{64}, the pipeline pins c{64}/ },
];

/** Every file below a folder, relative to it. */
function filesUnder(dir: string, rel = ''): string[] {
  if (!existsSync(join(dir, rel))) return [];
  return readdirSync(join(dir, rel), { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(dir, join(rel, e.name)) : [join(rel, e.name)]));
}

describe('the catalogue of bad inputs', () => {
  it('has at least 40 cases across the CLI, pipeline, kernel, rootfs, driver, toolkit and vGPU', () => {
    expect(cases.length).toBeGreaterThanOrEqual(40);
  });

  it.each(cases.map((c) => [c.name, c] as const))('%s', (_, c) => {
    const dir = suiteDir('gpu-guest-case-');
    const cache = join(dir, 'cache');
    const out = join(dir, 'out');
    const args = c.args(dir);
    const common = [...(args.includes('--cache-dir') ? [] : ['--cache-dir', cache]), ...(args.includes('--out-dir') || args[0] !== 'build' ? [] : ['--out-dir', out])];
    const begun = Date.now();
    const r = spawnSync(process.execPath, [cliBin, ...args, ...common], { cwd: c.cwd?.(dir) ?? repoRoot, encoding: 'utf8', timeout: 60_000, env: { ...process.env, CI: 'true', ...c.env } });
    const took = Date.now() - begun;
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(c.exit);
    expect(r.stderr).toMatch(new RegExp(`^error: ${c.code}: `, 'm'));
    expect(r.stderr).toMatch(c.message);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    // no hang, and never after expensive work
    expect(took).toBeLessThan(20_000);
    // nothing partial: no cache entry, no scratch, no artifact (logs of a failed task may stay)
    expect(filesUnder(join(cache, 'entries'))).toEqual([]);
    expect(filesUnder(join(cache, 'tmp'))).toEqual([]);
    expect(filesUnder(out).filter((f) => !f.startsWith('intel-test/logs/') && !f.endsWith('.gpu-guest-out'))).toEqual([]);
  });
});
