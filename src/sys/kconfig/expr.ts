import type { OptionValue } from './options.js';

/** Kconfig tristate: n=0, m=1, y=2. */
type Tri = 0 | 1 | 2;

type Token = { kind: 'sym' | 'str' | 'op'; text: string };

function tokenize(expr: string): Token[] {
  const tokens: Token[] = [];
  const re = /\s*(&&|\|\||!=|<=|>=|[!()=<>]|"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_$.-]+)/y;
  let m: RegExpExecArray | null;
  while ((m = re.exec(expr)) !== null && m[1] !== undefined) {
    const t = m[1];
    if (/^["']/.test(t)) tokens.push({ kind: 'str', text: t.slice(1, -1) });
    else if (/^[A-Za-z0-9_$.-]+$/.test(t)) tokens.push({ kind: 'sym', text: t });
    else tokens.push({ kind: 'op', text: t });
  }
  return tokens;
}

/** Evaluates a Kconfig dependency expression against final .config values; collects the symbols it reads. */
export function evaluate(expr: string, values: Map<string, OptionValue>): { value: Tri; symbols: string[] } {
  const tokens = tokenize(expr);
  const symbols: string[] = [];
  let pos = 0;
  const peek = () => tokens[pos];
  const raw = (t: Token): string => {
    if (t.kind === 'str') return t.text;
    if (['y', 'm', 'n'].includes(t.text) || /^-?\d/.test(t.text)) return t.text;
    symbols.push(t.text);
    const v = values.get(t.text);
    return v === undefined || v === null ? 'n' : v.replace(/^"(.*)"$/, '$1');
  };
  const tri = (s: string): Tri => (s === 'y' ? 2 : s === 'm' ? 1 : 0);
  const primary = (): Tri => {
    const t = tokens[pos++];
    if (!t) return 2;
    if (t.kind === 'op' && t.text === '!') return (2 - primary()) as Tri;
    if (t.kind === 'op' && t.text === '(') {
      const v = or();
      if (peek()?.text === ')') pos++;
      return v;
    }
    const left = raw(t);
    const op = peek();
    if (op?.kind === 'op' && ['=', '!=', '<', '>', '<=', '>='].includes(op.text)) {
      pos++;
      const right = raw(tokens[pos++] ?? { kind: 'str', text: '' });
      switch (op.text) {
        case '=':
          return left === right ? 2 : 0;
        case '!=':
          return left !== right ? 2 : 0;
        default: {
          const a = Number(left);
          const b = Number(right);
          if (Number.isNaN(a) || Number.isNaN(b)) return 2;
          const ok = op.text === '<' ? a < b : op.text === '>' ? a > b : op.text === '<=' ? a <= b : a >= b;
          return ok ? 2 : 0;
        }
      }
    }
    return tri(left);
  };
  const and = (): Tri => {
    let v = primary();
    while (peek()?.text === '&&') {
      pos++;
      v = Math.min(v, primary()) as Tri;
    }
    return v;
  };
  const or = (): Tri => {
    let v = and();
    while (peek()?.text === '||') {
      pos++;
      v = Math.max(v, and()) as Tri;
    }
    return v;
  };
  const value = or();
  return { value, symbols: [...new Set(symbols)] };
}
