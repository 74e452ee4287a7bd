// The README's error-code table, from the one table in src/model/errors.ts (after npm run build).
// `node scripts/error-table.mjs` prints it; `--write` puts it into README.md between its markers.
// test/model/errors.test.ts checks that README.md holds exactly this table.
import { readFileSync, writeFileSync } from 'node:fs';
import { ERROR_CODES, EXIT } from '../dist/model/errors.js';

const exitOf = { usage: EXIT.usage, build: EXIT.taskFailed, interrupted: EXIT.interrupted };
export function errorTable() {
  const rows = Object.entries(ERROR_CODES).map(([code, info]) => `| \`${code}\` | ${exitOf[info.kind]} | ${info.fix} |`);
  return ['| code | exit | what fixes it |', '|---|---|---|', ...rows].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (process.argv.includes('--write')) {
    const readme = new URL('../README.md', import.meta.url);
    const text = readFileSync(readme, 'utf8');
    const next = text.replace(/<!-- error-table:start -->\n[\s\S]*?\n<!-- error-table:end -->/, () => `<!-- error-table:start -->\n${errorTable()}\n<!-- error-table:end -->`);
    writeFileSync(readme, next);
  } else {
    console.log(errorTable());
  }
}
