#!/usr/bin/env node
import { main } from '../dist/cli/main.js';

// a reader that stops reading (`gpu-guest plan --json | head`) ends our output, not the command:
// a build goes on and cleans up as it would
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code !== 'EPIPE') throw err;
  });
}
const status = await main(process.argv);
// a pipe takes output only as fast as its reader reads: exit once stdout and stderr have handed
// over everything written (`plan --json | jq` would otherwise get the first 64 KiB)
await Promise.all([process.stdout, process.stderr].map((stream) => new Promise((done) => (stream.destroyed ? done() : stream.write('', done)))));
process.exit(status);
