import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { versionRange } from '../steps/kernel/versions.js';
import { checkRegistry, osBase, parseVgpuRunName } from '../steps/vgpu/naming.js';
import { dkmsPins } from '../steps/nvidia/driver-packages.js';
import { createRequire } from 'node:module';
import type { ErrorObject, ValidateFunction } from 'ajv';
import { isMap, isNode, LineCounter, parseDocument, type Document } from 'yaml';
import { readSigningIdentity } from '../sys/module-signing.js';
import { GuestError } from '../model/errors.js';
import { kernelProfileFiles, projectRoot } from '../paths.js';
import { applyOverride, formatKeyPath, parseOverride, type KeyPath, type Override } from './overrides.js';
import { keysAt, PATTERN_MEANING, PIPELINE_VALIDATOR_OPTIONS, pipelineSchema } from './schema.js';
import { expandMatrix } from './matrix.js';
import type { LoadedPipeline, Pipeline } from './types.js';

export interface PipelineSelection {
  /** `--vendor X` loads `<pipelinesDir>/X.yaml`. */
  vendor?: string;
  /** `--pipeline FILE` loads any file. */
  file?: string;
  /** `--set key.path=value`, in order. */
  sets?: string[];
  /** Default: `<project root>/pipelines`. */
  pipelinesDir?: string;
  /** Folder that `--set` paths starting with ./ or ../ resolve against. Default: process.cwd(). */
  cwd?: string;
}

/** A pipeline file is a few kilobytes; anything past this is not one. */
const MAX_PIPELINE_BYTES = 1 << 20;

let validator: ValidateFunction | undefined;

/**
 * The schema's validator: the one `npm run build` wrote as code beside this file
 * (scripts/pipeline-validator.mjs), so a start does not load Ajv and compile the schema; compiled
 * here when it is absent (running from the sources). A test checks that both judge alike.
 */
export function pipelineValidator(compiled = false): ValidateFunction {
  if (validator && !compiled) return validator;
  const require = createRequire(import.meta.url);
  if (!compiled) {
    try {
      return (validator = require('./validate-pipeline.cjs') as ValidateFunction);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
    }
  }
  const { Ajv } = require('ajv') as typeof import('ajv');
  const own = new Ajv(PIPELINE_VALIDATOR_OPTIONS).compile(pipelineSchema);
  if (!compiled) validator = own;
  return own;
}

/** Names of the shipped pipelines (`--vendor` values). */
export function listVendors(pipelinesDir = resolve(projectRoot, 'pipelines')): string[] {
  if (!existsSync(pipelinesDir)) return [];
  return readdirSync(pipelinesDir)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => f.slice(0, -5))
    .sort();
}

export function pipelineFileFor(selection: PipelineSelection): string {
  const pipelinesDir = selection.pipelinesDir ?? resolve(projectRoot, 'pipelines');
  if (selection.file && selection.vendor) {
    throw new GuestError('E_USAGE', 'give either --vendor or --pipeline, not both');
  }
  if (selection.file) {
    const file = resolve(selection.cwd ?? process.cwd(), selection.file);
    if (!existsSync(file)) {
      throw new GuestError('E_PIPELINE_NOT_FOUND', `pipeline file ${selection.file} does not exist (check the path given to --pipeline)`);
    }
    // a directory, a device (/dev/zero) or a FIFO would fail late or be read forever
    const st = statSync(file);
    if (!st.isFile()) throw new GuestError('E_PIPELINE_INVALID', `pipeline file ${selection.file} is ${st.isDirectory() ? 'a directory' : 'not a regular file'} (give --pipeline a .yaml file)`);
    if (st.size > MAX_PIPELINE_BYTES) throw new GuestError('E_PIPELINE_INVALID', `pipeline file ${selection.file} is ${st.size} bytes; a pipeline is at most ${MAX_PIPELINE_BYTES} (is this the right file?)`);
    return file;
  }
  if (!selection.vendor) {
    const vendors = listVendors(pipelinesDir);
    throw new GuestError('E_USAGE', `name a pipeline: --vendor ${vendors.join('|') || 'NAME'} or --pipeline FILE`);
  }
  const file = resolve(pipelinesDir, `${selection.vendor}.yaml`);
  if (!/^[a-z0-9][a-z0-9._-]*$/.test(selection.vendor) || !existsSync(file)) {
    const vendors = listVendors(pipelinesDir);
    throw new GuestError('E_UNKNOWN_VENDOR', `unknown vendor '${selection.vendor}' (pipelines available: ${vendors.join(', ') || 'none'}; or pass --pipeline FILE)`);
  }
  return file;
}

/** Reads, overrides, validates and resolves one pipeline file. Errors name file:line:col and the key. */
export function loadPipeline(selection: PipelineSelection): LoadedPipeline {
  const file = pipelineFileFor(selection);
  const shown = displayPath(file);
  const text = readFileSync(file, 'utf8');
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const pos = lines.linePos(e.pos[0]);
    throw new GuestError('E_PIPELINE_SYNTAX', `${shown}:${pos.line}:${pos.col}: YAML syntax error: ${e.message.split('\n')[0]} (fix the file's indentation or quoting)`);
  }
  let data: unknown;
  try {
    // yaml refuses documents whose aliases expand without bound (a "billion laughs" file)
    data = doc.toJS({ maxAliasCount: 100 }) as unknown;
  } catch (err) {
    throw new GuestError('E_PIPELINE_SYNTAX', `${shown}: ${(err as Error).message.split('\n')[0]} (a pipeline has no need for that many aliases)`, { cause: err });
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new GuestError('E_PIPELINE_INVALID', `${shown}: expected a mapping of keys (name, vendor, kernel, rootfs …) at the top level`);
  }
  const overrides = (selection.sets ?? []).map(parseOverride);
  for (const o of overrides) applyOverride(data as Record<string, unknown>, o);

  const validate = pipelineValidator();
  if (!validate(data)) {
    const problems = (validate.errors ?? []).map((e) => describeSchemaError(e, data, doc, lines, shown, overrides));
    const unique = [...new Set(problems)];
    throw new GuestError('E_PIPELINE_INVALID', unique[0]!, { details: unique.length > 1 ? unique : [] });
  }
  const pipeline = data as unknown as Pipeline;
  const where = (path: KeyPath) => locate(doc, lines, shown, path, overrides);
  checkSemantics(pipeline, where);
  const combinations = pipeline.matrix ? expandMatrix(pipeline.matrix, where) : [];
  const baseDir = dirname(file);
  resolvePaths(pipeline, baseDir, selection.cwd ?? process.cwd(), overrides, where);
  return { pipeline, file, baseDir, combinations };
}

function displayPath(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel.startsWith('..') ? file : rel;
}

/** `file:line:col` of a key path, or `--set …` when an override wrote it. */
function locate(doc: Document, lines: LineCounter, shown: string, path: KeyPath, overrides: Override[]): string {
  const override = [...overrides].reverse().find((o) => isPrefix(o.path, path) || isPrefix(path, o.path));
  if (override) return `--set ${override.text}`;
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (isNode(node) && node.range) {
      const pos = lines.linePos(node.range[0]);
      return `${shown}:${pos.line}:${pos.col}`;
    }
  }
  return shown;
}

function isPrefix(a: KeyPath, b: KeyPath): boolean {
  return a.length <= b.length && a.every((p, i) => p === b[i]);
}

function keyRange(doc: Document, path: KeyPath, key: string): number | undefined {
  const parent = path.length ? doc.getIn(path, true) : doc.contents;
  if (!isMap(parent)) return undefined;
  const pair = parent.items.find((p) => isNode(p.key) && (p.key as { value?: unknown }).value === key);
  return pair && isNode(pair.key) ? pair.key.range?.[0] : undefined;
}

function pointerToPath(pointer: string): KeyPath {
  if (!pointer) return [];
  return pointer
    .slice(1)
    .split('/')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
}

/** One schema error as `file:line:col: key: what was expected, what was found`; data has the overrides applied. */
function describeSchemaError(e: ErrorObject, data: unknown, doc: Document, lines: LineCounter, shown: string, overrides: Override[]): string {
  const path = pointerToPath(e.instancePath);
  const found = describeValue(valueAt(data, path));
  const key = formatKeyPath(path) || '(top level)';
  switch (e.keyword) {
    case 'additionalProperties': {
      const extra = String((e.params as { additionalProperty: string }).additionalProperty);
      const full = [...path, extra];
      const offset = keyRange(doc, path, extra);
      const at = offset !== undefined ? `${shown}:${lines.linePos(offset).line}:${lines.linePos(offset).col}` : locate(doc, lines, shown, full, overrides);
      const allowed = keysAt(path);
      return `${at}: ${formatKeyPath(full)}: unknown key (expected one of: ${allowed.join(', ')})`;
    }
    case 'required': {
      const missing = String((e.params as { missingProperty: string }).missingProperty);
      return `${locate(doc, lines, shown, path, overrides)}: ${formatKeyPath([...path, missing])}: required key is missing`;
    }
    case 'type':
      return `${locate(doc, lines, shown, path, overrides)}: ${key}: expected ${(e.params as { type: string }).type}, found ${found}${quoteHint(e, found)}`;
    case 'enum':
      return `${locate(doc, lines, shown, path, overrides)}: ${key}: expected one of ${((e.params as { allowedValues: unknown[] }).allowedValues).map(String).join(', ')}, found ${found}`;
    case 'pattern':
      return `${locate(doc, lines, shown, path, overrides)}: ${key}: expected ${PATTERN_MEANING[(e.params as { pattern: string }).pattern] ?? `a value matching ${(e.params as { pattern: string }).pattern}`}, found ${found}`;
    default:
      return `${locate(doc, lines, shown, path, overrides)}: ${key}: ${e.message ?? 'invalid'}, found ${found}`;
  }
}

function quoteHint(e: ErrorObject, found: string): string {
  return (e.params as { type: string }).type === 'string' && found.startsWith('number') ? ' (quote it in YAML: "…")' : '';
}

function valueAt(data: unknown, path: KeyPath): unknown {
  let node: unknown = data;
  for (const p of path) node = node && typeof node === 'object' ? (node as Record<string | number, unknown>)[p] : undefined;
  return node;
}

function describeValue(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

type Where = (path: KeyPath) => string;

function checkSemantics(p: Pipeline, where: Where): void {
  if (p.vendor === 'nvidia-vgpu') checkVgpu(p, where);
  if (p.image?.verity && p.image.format !== 'erofs') {
    throw new GuestError('E_PIPELINE_INVALID', `${where(['image', 'verity'])}: image.verity needs image.format: erofs (the read-only measured rootfs Kata uses), not ${p.image.format}`);
  }
  if (!p.rootfs) {
    if (p.vendor !== 'nvidia-vgpu' || (!p.vgpu?.baseImage && p.vgpu?.engine === 'builtin')) {
      throw new GuestError('E_PIPELINE_INVALID', `${where([])}: rootfs: required (add a rootfs: section${p.vendor === 'nvidia-vgpu' ? ', or vgpu.baseImage' : ''})`);
    }
  } else {
    const local = /^file:\/\/(\/.*)$/.exec(p.rootfs.mirror)?.[1];
    if (local && !existsSync(join(decodeURI(local), 'dists'))) {
      throw new GuestError('E_PIPELINE_INVALID', `${where(['rootfs', 'mirror'])}: rootfs.mirror ${p.rootfs.mirror}: no Debian repository there (no dists/ folder); check the path`);
    }
    const recipes = join(projectRoot, 'rootfs');
    if (!existsSync(join(recipes, p.rootfs.distro, 'recipe.yaml'))) {
      const known = existsSync(recipes) ? readdirSync(recipes).filter((d) => existsSync(join(recipes, d, 'recipe.yaml'))) : [];
      throw new GuestError('E_PIPELINE_INVALID', `${where(['rootfs', 'distro'])}: rootfs.distro: no recipe for '${p.rootfs.distro}' (known: ${known.join(', ')}; recipes live in rootfs/<distro>/recipe.yaml)`);
    }
  }
  if (p.vendor === 'nvidia-vgpu') return;
  if (!p.kernel) throw new GuestError('E_PIPELINE_INVALID', `${where([])}: kernel: required for vendor ${p.vendor} (add a kernel: section)`);
  if (p.vgpu) throw new GuestError('E_PIPELINE_INVALID', `${where(['vgpu'])}: vgpu: only for vendor nvidia-vgpu; remove it`);
  try {
    versionRange(p.kernel.version);
  } catch (err) {
    throw new GuestError('E_PIPELINE_INVALID', `${where(['kernel', 'version'])}: ${(err as Error).message}`, { cause: err });
  }
  if (p.kernel.profile && p.kernel.baseConfig) {
    throw new GuestError('E_PIPELINE_INVALID', `${where(['kernel', 'baseConfig'])}: kernel: give either profile (a shipped base: kata or minimal) or baseConfig (your own base file), not both`);
  }
  if (p.kernel.source.mirrors && p.kernel.source.tarball) {
    throw new GuestError('E_PIPELINE_INVALID', `${where(['kernel', 'source'])}: kernel.source: give either mirrors or tarball, not both`);
  }
  if (p.vendor === 'nvidia') {
    for (const section of ['driver', 'toolkit'] as const) {
      if (!p[section]) throw new GuestError('E_PIPELINE_INVALID', `${where([])}: ${section}: required for vendor nvidia (add a ${section}: section)`);
    }
    checkModuleSource(p.driver!, where);
    checkDriverKind(p.driver!, where);
  }
  if (p.vendor === 'intel') {
    for (const section of ['driver', 'toolkit'] as const) {
      if (p[section]) throw new GuestError('E_PIPELINE_INVALID', `${where([section])}: ${section}: not used by vendor intel (i915 is built into the kernel); remove it`);
    }
  }
}

/** driver.moduleSource belongs to driver.source: source, and names one place at most. */
function checkModuleSource(d: NonNullable<Pipeline['driver']>, where: Where): void {
  const m = d.moduleSource;
  if (!m) return;
  if (d.source !== 'source') {
    throw new GuestError('E_PIPELINE_INVALID', `${where(['driver', 'moduleSource'])}: driver.moduleSource is only read with driver.source: source (set it, or remove moduleSource)`);
  }
  const given = (['mirrors', 'url', 'path'] as const).filter((k) => m[k] !== undefined);
  if (given.length > 1) {
    throw new GuestError('E_PIPELINE_INVALID', `${where(['driver', 'moduleSource'])}: driver.moduleSource: give one of mirrors, url or path, not ${given.join(' and ')}`);
  }
}

/**
 * run and source install a pinned .run; apt installs pinned packages and reads no .run: a key the
 * chosen source does not read is an error, not silently ignored.
 */
function checkDriverKind(d: NonNullable<Pipeline['driver']>, where: Where): void {
  const invalid = (key: string, msg: string) => new GuestError('E_PIPELINE_INVALID', `${where(['driver', key])}: driver.${key}: ${msg}`);
  if (d.source !== 'apt') {
    for (const key of ['packages', 'repository'] as const) {
      if (d[key] !== undefined) throw invalid(key, `only read with driver.source: apt (set it, or remove ${key})`);
    }
    if (!d.sha256) throw invalid('sha256', `required with driver.source: ${d.source} (the .run's sha256, e.g. from sha256sum NVIDIA-Linux-x86_64-${d.version}.run)`);
    return;
  }
  for (const key of ['sha256', 'url', 'path'] as const) {
    if (d[key] !== undefined) throw invalid(key, 'not read with driver.source: apt, which installs packages and no .run (remove it)');
  }
  if (d.installerArgs.length) throw invalid('installerArgs', 'not read with driver.source: apt (nvidia-installer does not run; remove it)');
  const packages = d.packages ?? [];
  if (!packages.length) throw invalid('packages', `required with driver.source: apt: the driver's packages pinned as name=version, e.g. [nvidia-kernel-dkms=${d.version}-1, nvidia-smi=${d.version}-1, libnvidia-ml1=${d.version}-1, firmware-nvidia-gsp=${d.version}-1]`);
  const unpinned = packages.filter((n) => !n.includes('='));
  if (unpinned.length) throw invalid('packages', `${unpinned.join(', ')} not pinned: write name=version (apt installs exactly that version)`);
  const dkms = dkmsPins(packages);
  if (dkms.length !== 1) throw invalid('packages', `name exactly one DKMS package (…-dkms=version) that builds the kernel modules, not ${dkms.length ? dkms.join(' and ') : 'none'}`);
  const upstream = upstreamVersion(dkms[0]!.split('=')[1]!);
  if (upstream !== d.version) throw invalid('packages', `${dkms[0]} builds driver ${upstream}, but driver.version says ${d.version}: make them the same`);
}

/** The upstream part of a Debian version: no epoch, no revision (1:535.261.03-1~deb12u1 → 535.261.03). */
export function upstreamVersion(debianVersion: string): string {
  return debianVersion.replace(/^\d+:/, '').replace(/-[^-]*$/, '');
}

function checkVgpu(p: Pipeline, where: Where): void {
  const v = p.vgpu;
  if (!v) throw new GuestError('E_PIPELINE_INVALID', `${where([])}: vgpu: required for vendor nvidia-vgpu (add a vgpu: section)`);
  for (const section of ['kernel', 'driver', 'toolkit'] as const) {
    if (p[section]) throw new GuestError('E_PIPELINE_INVALID', `${where([section])}: ${section}: not used by vendor nvidia-vgpu; remove it`);
  }
  const at = (key: string, err: unknown) => new GuestError('E_PIPELINE_INVALID', `${where(['vgpu', key])}: ${(err as Error).message}`);
  try {
    checkRegistry(v.registry);
  } catch (err) {
    throw at('registry', err);
  }
  let base;
  try {
    base = osBase(v.osTag);
  } catch (err) {
    throw at('osTag', err);
  }
  if (base.needsBaseImage && !v.baseImage && v.engine === 'builtin') {
    throw new GuestError('E_PIPELINE_INVALID', `${where(['vgpu', 'osTag'])}: vgpu.osTag ${v.osTag} has a RHEL-family base, which cannot be bootstrapped from a Debian-format mirror: give vgpu.baseImage (an OCI layout or oci-archive of your base image)`);
  }
  // the tag promises the node's OS: the image built from the rootfs must be that distribution and release
  if (!v.baseImage && v.engine === 'builtin' && p.rootfs && base.distro && (p.rootfs.distro !== base.distro || p.rootfs.suite !== base.suite)) {
    throw new GuestError('E_PIPELINE_INVALID', `${where(['vgpu', 'osTag'])}: vgpu.osTag ${v.osTag} needs a ${base.distro} ${base.suite} base, but rootfs is ${p.rootfs.distro} ${p.rootfs.suite} (make rootfs.distro and rootfs.suite match the nodes' OS, or change vgpu.osTag)`);
  }
  if (v.hostKernels.length && (v.baseImage || v.engine !== 'builtin' || !base.distro)) {
    throw new GuestError('E_PIPELINE_INVALID', `${where(['vgpu', 'hostKernels'])}: vgpu.hostKernels builds the modules in the image's Debian or Ubuntu base with the built-in builder: use a rootfs: base and engine builtin, or remove hostKernels`);
  }
  const releases = v.hostKernels.map((k) => k.split('=')[0]!);
  const twice = releases.find((r, i) => releases.indexOf(r) !== i);
  if (twice) throw new GuestError('E_PIPELINE_INVALID', `${where(['vgpu', 'hostKernels'])}: vgpu.hostKernels names ${twice} twice`);
  const name = v.path ? basename(v.path) : v.url ? basename(new URL(v.url).pathname) : undefined;
  if (!name && !v.version) throw new GuestError('E_PIPELINE_INVALID', `${where(['vgpu'])}: vgpu: give path or url of the .run (or at least version, for NVIDIA's download layout)`);
  if (name) {
    let parsed;
    try {
      parsed = parseVgpuRunName(name);
    } catch (err) {
      if (!v.version) throw new GuestError('E_VGPU_NAME', `${where(['vgpu', v.path ? 'path' : 'url'])}: ${(err as Error).message}`, { cause: err });
    }
    if (parsed && v.version && parsed.version !== v.version) {
      throw new GuestError('E_PIPELINE_INVALID', `${where(['vgpu', 'version'])}: vgpu.version ${v.version} disagrees with the file name ${name} (${parsed.version})`);
    }
    if (parsed) v.version = parsed.version;
  }
}

/**
 * Relative paths starting with ./ or ../ resolve against the pipeline file's folder (or the current
 * folder for values given with --set); any other relative path resolves against the gpu-guest
 * installation, so that `kernel-configs/fragments/gpu/nvidia.conf` names the shipped fragment.
 */
function resolvePaths(p: Pipeline, baseDir: string, cwd: string, overrides: Override[], where: Where): void {
  const fix = (value: string, path: KeyPath): string => {
    if (isAbsolute(value)) return value;
    const fromSet = overrides.some((o) => isPrefix(o.path, path));
    const anchor = /^\.\.?(\/|$)/.test(value) ? (fromSet ? cwd : baseDir) : projectRoot;
    return resolve(anchor, value);
  };
  const mustExist = (file: string, path: KeyPath): string => {
    const abs = fix(file, path);
    if (!existsSync(abs)) {
      throw new GuestError('E_PIPELINE_INVALID', `${where(path)}: ${formatKeyPath(path)}: ${abs} does not exist (fix the path; relative paths resolve as README "Paths" says)`);
    }
    return abs;
  };
  if (p.kernel) {
    if (p.kernel.baseConfig) p.kernel.profileFragments = [];
    else {
      p.kernel.profile ??= 'kata';
      Object.assign(p.kernel, kernelProfileFiles(p.kernel.profile));
    }
  }
  visitLocalPaths(p, mustExist);
  const signing = p.kernel?.moduleSigning;
  if (signing) {
    try {
      signing.identity = readSigningIdentity(signing.key, signing.certificate);
    } catch (err) {
      throw new GuestError('E_PIPELINE_INVALID', `${where(['kernel', 'moduleSigning'])}: ${(err as Error).message}`, { cause: err });
    }
  }
}

/**
 * Every key of a pipeline that names a local file or folder (not a URL, not `apt:`), with its value:
 * `visit` returns the value to put there (resolvePaths makes them absolute; `fetch --bundle` copies
 * the files and points the bundled pipeline at the copies).
 */
export function visitLocalPaths(p: Pipeline, visit: (value: string, path: KeyPath) => string): void {
  if (p.vgpu) {
    if (p.vgpu.path) p.vgpu.path = visit(p.vgpu.path, ['vgpu', 'path']);
    if (p.vgpu.baseImage) p.vgpu.baseImage = visit(p.vgpu.baseImage, ['vgpu', 'baseImage']);
    if (p.vgpu.dockerfileDir) p.vgpu.dockerfileDir = visit(p.vgpu.dockerfileDir, ['vgpu', 'dockerfileDir']);
  }
  if (!p.kernel) return;
  if (p.kernel.baseConfig) p.kernel.baseConfig = visit(p.kernel.baseConfig, ['kernel', 'baseConfig']);
  if (p.kernel.fragments) p.kernel.fragments = p.kernel.fragments.map((f, i) => visit(f, ['kernel', 'fragments', i]));
  if (p.kernel.keyring) p.kernel.keyring = visit(p.kernel.keyring, ['kernel', 'keyring']);
  const signing = p.kernel.moduleSigning;
  if (signing) {
    signing.key = visit(signing.key, ['kernel', 'moduleSigning', 'key']);
    signing.certificate = visit(signing.certificate, ['kernel', 'moduleSigning', 'certificate']);
  }
  const tarball = p.kernel.source?.tarball;
  if (tarball && !/^(https?:\/\/|apt:)/.test(tarball)) p.kernel.source.tarball = visit(tarball, ['kernel', 'source', 'tarball']);
  if (p.driver?.path) p.driver.path = visit(p.driver.path, ['driver', 'path']);
  if (p.driver?.moduleSource?.path) p.driver.moduleSource.path = visit(p.driver.moduleSource.path, ['driver', 'moduleSource', 'path']);
  if (p.driver?.patches) p.driver.patches = p.driver.patches.map((f, i) => visit(f, ['driver', 'patches', i]));
  if (p.driver?.repository?.key) p.driver.repository.key = visit(p.driver.repository.key, ['driver', 'repository', 'key']);
  if (p.toolkit) {
    if (p.toolkit.debs) p.toolkit.debs = p.toolkit.debs.map((d, i) => visit(d, ['toolkit', 'debs', i]));
    const repo = p.toolkit.repository;
    if (repo && !/^https?:\/\//.test(repo.key)) repo.key = visit(repo.key, ['toolkit', 'repository', 'key']);
  }
}
