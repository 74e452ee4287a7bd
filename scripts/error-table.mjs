// Prints the README's error-code table from the one table in src/model/errors.ts (after npm run build).
// test/model/errors.test.ts checks that README.md holds exactly this table.
import { ERROR_CODES, EXIT } from '../dist/model/errors.js';

const exitOf = { usage: EXIT.usage, build: EXIT.taskFailed, interrupted: EXIT.interrupted };
export function errorTable() {
  const rows = Object.entries(ERROR_CODES).map(([code, info]) => `| \`${code}\` | ${exitOf[info.kind]} | ${info.fix} |`);
  return ['| code | exit | what fixes it |', '|---|---|---|', ...rows].join('\n');
}
if (import.meta.url === `file://${process.argv[1]}`) console.log(errorTable());
