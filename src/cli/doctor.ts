import { aptInstallLine, checkHostTools } from '../sys/host-tools.js';
import type { CliEnv, PipelineOptions } from './context.js';

/** gpu-guest doctor: which host tools the pipeline's tasks need, and the apt-get line for the missing ones. */
export async function doctorCommand(opts: PipelineOptions & { json?: boolean }, env: CliEnv): Promise<number> {
  const kinds = opts.vendor || opts.pipeline ? [...env.loadGraph(opts).graph.tasks.map((t) => t.kind), 'verify'] : undefined;
  const checks = await checkHostTools(kinds);
  const fix = aptInstallLine(checks);
  if (opts.json) {
    env.stdout(`${JSON.stringify({ tools: checks.map((c) => ({ name: c.tool.name, present: c.present, coveredBy: c.coveredBy ?? null, aptPackage: c.tool.aptPackage, neededBy: c.tool.neededBy })), fix: fix ?? null }, null, 2)}\n`);
  } else {
    const width = Math.max(...checks.map((c) => c.tool.name.length));
    for (const c of checks) {
      const state = c.present ? 'ok' : c.coveredBy ? `missing (${c.coveredBy} stands in)` : `MISSING (apt package ${c.tool.aptPackage})`;
      env.stdout(`${c.tool.name.padEnd(width)}  ${state}${c.tool.neededBy.length ? `  — for ${c.tool.neededBy.join(', ')}` : ''}\n`);
    }
    env.stdout(fix ? `\nto fix, run as root:\n  apt-get update && ${fix}\n` : '\nall host tools are present\n');
  }
  return fix ? 1 : 0;
}
