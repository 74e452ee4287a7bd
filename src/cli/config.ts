import { existsSync, readFileSync, statSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { GuestError } from '../model/errors.js';
import { planRun } from '../engine/plan.js';
import { builtEntryOfKind } from '../engine/results.js';
import { listVendors } from '../pipeline/load.js';
import { expandFragments, readFragment } from '../sys/kconfig/fragments.js';
import { diffConfigs, explainOption, formatDiff, formatExplanation, fragmentSide, type ConfigSide } from '../sys/kconfig/explain.js';
import { parseDotConfig, parseRequested, type OptionValue, type RequestedOption } from '../sys/kconfig/options.js';
import { indexKconfig } from '../sys/kconfig/tree.js';
import type { Json } from '../model/json.js';
import { openCacheReadOnly, type CliEnv, type PipelineOptions } from './context.js';
import { abortOnSignals } from './signals.js';

export interface ConfigDiffOptions extends PipelineOptions {
  json?: boolean;
  exitCode?: boolean;
}

/** A pipeline's built kernel config, read from the cache (never built here). */
interface BuiltConfig {
  label: string;
  values: Map<string, OptionValue>;
  requests: RequestedOption[];
  /** The extracted kernel tree of the build, when it is still cached. */
  tree?: string;
  release: string;
}

async function builtConfig(opts: PipelineOptions, env: CliEnv): Promise<BuiltConfig> {
  const loaded = env.loadGraph(opts);
  const name = loaded.graph.pipeline;
  const how = opts.vendor ? `--vendor ${opts.vendor}` : `--pipeline ${opts.pipeline}`;
  if (!loaded.graph.tasks.some((t) => t.kind === 'kernel-config')) throw new GuestError('E_USAGE', `pipeline ${name} builds no kernel, so it has no kernel config`);
  const { store, memo } = openCacheReadOnly(opts, env.env);
  const signals = abortOnSignals(() => undefined);
  try {
    const plan = await planRun(loaded.graph, {}, { steps: env.steps, store, memo, signal: signals.signal, network: false });
    const config = await builtEntryOfKind(plan, store, 'kernel-config');
    if (!config) throw new GuestError('E_NOT_CACHED', `pipeline ${name}'s kernel config is not built in ${store.root}: run gpu-guest build ${how} --until kernel-config (with the same --set, --fragment and --cache-dir)`);
    const source = await builtEntryOfKind(plan, store, 'kernel-source');
    const key = plan.tasks.find((t) => t.kind === 'kernel-config')!.key;
    return {
      label: `${name} (kernel-config ${key.slice(0, 12)})`,
      values: parseDotConfig(readFileSync(join(config.outDir, 'config'), 'utf8')),
      requests: parseRequested(readFileSync(join(config.outDir, 'requested.conf'), 'utf8')),
      tree: source ? join(source.outDir, 'tree') : undefined,
      release: source?.result.version ?? 'the kernel',
    };
  } finally {
    signals.dispose();
  }
}

/**
 * One side of a diff: a vendor name or pipeline file (its built config), a folder or `*.conf`
 * file of fragments (what they ask for), or any other file as a full .config (`.gz` too).
 */
async function readSide(spec: string, opts: PipelineOptions, env: CliEnv): Promise<ConfigSide> {
  if (existsSync(spec)) {
    if (/\.ya?ml$/.test(spec)) return builtConfig({ ...opts, vendor: undefined, pipeline: spec }, env);
    if (statSync(spec).isDirectory() || /\.conf(\.in)?$/.test(spec)) return fragmentSide(`${spec} (fragments)`, expandFragments([spec]).flatMap(readFragment));
    const raw = readFileSync(spec);
    const values = parseDotConfig((spec.endsWith('.gz') ? gunzipSync(raw) : raw).toString('utf8'));
    if (!values.size) throw new GuestError('E_USAGE', `config diff: ${spec} holds no CONFIG_ line (give a .config, a folder or *.conf file of fragments, a pipeline file or a vendor name)`);
    return { label: spec, values };
  }
  if (listVendors().includes(spec)) return builtConfig({ ...opts, vendor: spec, pipeline: undefined }, env);
  throw new GuestError('E_USAGE', `config diff: ${spec} is no file, folder or vendor (vendors: ${listVendors().join(', ')}); give a .config, a fragment folder or file, a pipeline file or a vendor name`);
}

/** gpu-guest config diff A B: the options that differ, grouped as turned on, turned off and changed value. */
export async function configDiffCommand(a: string, b: string, opts: ConfigDiffOptions, env: CliEnv): Promise<number> {
  const [left, right] = [await readSide(a, opts, env), await readSide(b, opts, env)];
  const diff = diffConfigs(left, right);
  if (opts.json) env.stdout(`${JSON.stringify({ a: left.label, b: right.label, ...diff } as unknown as Json, null, 2)}\n`);
  else env.stdout(formatDiff(diff, left.label, right.label));
  const differs = diff.on.length + diff.off.length + diff.value.length > 0;
  return opts.exitCode && differs ? 1 : 0;
}

export interface ConfigExplainOptions extends PipelineOptions {
  json?: boolean;
}

/** gpu-guest config explain CONFIG_X: why the option is on or off in the pipeline's built config. */
export async function configExplainCommand(option: string, opts: ConfigExplainOptions, env: CliEnv): Promise<number> {
  const symbol = option.replace(/^CONFIG_/, '');
  if (!/^[A-Za-z0-9_]+$/.test(symbol)) throw new GuestError('E_USAGE', `config explain ${option}: expected an option name such as CONFIG_VIRTIO_FS`);
  const built = await builtConfig(opts, env);
  if (!built.tree || !existsSync(join(built.tree, 'Kconfig'))) {
    throw new GuestError('E_NOT_CACHED', `config explain reads the Kconfig files of ${built.label}'s kernel source, which is no longer cached: run gpu-guest build --until kernel-config again`);
  }
  const explanation = explainOption(symbol, built.values, built.requests, indexKconfig(built.tree));
  if (!explanation) throw new GuestError('E_USAGE', `config explain ${option}: Linux ${built.release} defines no CONFIG_${symbol} (misspelled, renamed or removed)`);
  if (opts.json) env.stdout(`${JSON.stringify(explanation as unknown as Json, null, 2)}\n`);
  else env.stdout(formatExplanation(explanation, `${built.label}, Linux ${built.release}`));
  return 0;
}
