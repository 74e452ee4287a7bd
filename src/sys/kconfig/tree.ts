import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';

/** Where one `config SYM` entry is defined and what it depends on (its own and its enclosing blocks'). */
export interface SymbolDefinition {
  symbol: string;
  file: string;
  line: number;
  /** `depends on` expressions: the entry's, its prompt's `if`, and every enclosing if/menu/choice. */
  dependsOn: string[];
}

export interface Selector {
  /** The symbol whose `select` (or `imply`) names the target. */
  by: string;
  condition?: string;
  file: string;
  line: number;
}

export interface KconfigIndex {
  definitions: Map<string, SymbolDefinition[]>;
  /** Who selects each symbol: why an option asked to be off may be forced on. */
  selectors: Map<string, Selector[]>;
}

/** Marks a prompt's `if` condition among an entry's dependencies. */
export const PROMPT_IF = 'prompt if ';

interface Frame {
  kind: 'if' | 'menu' | 'choice';
  deps: string[];
}

/**
 * Reads the Kconfig tree the way kconfig does, from the top-level Kconfig through every `source`,
 * carrying the enclosing `if`/`menu`/`choice` conditions down to each entry — so only the
 * architecture's own files are read and inherited conditions are not lost.
 */
export function indexKconfig(srcTree: string, srcArch = 'x86'): KconfigIndex {
  const index: KconfigIndex = { definitions: new Map(), selectors: new Map() };
  const seen = new Set<string>();
  readKconfigFile(srcTree, join(srcTree, 'Kconfig'), srcArch, [], index, seen);
  return index;
}

function readKconfigFile(srcTree: string, file: string, srcArch: string, outer: Frame[], index: KconfigIndex, seen: Set<string>): void {
  if (seen.has(file) || !existsSync(file)) return;
  seen.add(file);
  const lines = readFileSync(file, 'utf8').split('\n');
  const stack: Frame[] = [...outer];
  let entry: SymbolDefinition | undefined;
  let frameOpen: Frame | undefined; // a menu/choice whose `depends on` lines are still being read
  let inHelp = false;
  const rel = relative(srcTree, file);
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!;
    while (line.endsWith('\\') && i + 1 < lines.length) line = line.slice(0, -1) + ' ' + lines[++i]!;
    if (inHelp) {
      if (line.trim() === '' || /^\s/.test(line)) continue;
      inHelp = false;
    }
    const text = line.replace(/(^|\s)#.*$/, '').trim();
    if (text === '') continue;
    const [word] = text.split(/\s+/, 1);
    const rest = text.slice(word!.length).trim();
    switch (word) {
      case 'config':
      case 'menuconfig': {
        frameOpen = undefined;
        const enclosing = stack.flatMap((f) => f.deps);
        entry = { symbol: rest, file: rel, line: i + 1, dependsOn: [...enclosing] };
        const list = index.definitions.get(rest) ?? [];
        list.push(entry);
        index.definitions.set(rest, list);
        break;
      }
      case 'comment':
        entry = undefined;
        frameOpen = undefined;
        break;
      case 'menu':
      case 'choice': {
        entry = undefined;
        frameOpen = { kind: word, deps: [] };
        stack.push(frameOpen);
        break;
      }
      case 'if':
        entry = undefined;
        frameOpen = undefined;
        stack.push({ kind: 'if', deps: [rest] });
        break;
      case 'endif':
      case 'endmenu':
      case 'endchoice':
        entry = undefined;
        frameOpen = undefined;
        stack.pop();
        break;
      case 'source':
      case 'osource':
      case 'rsource':
      case 'orsource': {
        entry = undefined;
        frameOpen = undefined;
        const target = rest.replace(/^"(.*)"$/, '$1').replace(/\$\(SRCARCH\)/g, srcArch).replace(/\$\(ARCH\)/g, srcArch);
        const path = word.endsWith('rsource') ? join(dirname(file), target) : join(srcTree, target);
        readKconfigFile(srcTree, path, srcArch, stack, index, seen);
        break;
      }
      case 'help':
      case '---help---':
        inHelp = true;
        break;
      case 'depends':
        if (rest.startsWith('on ')) {
          const expr = rest.slice(3).trim();
          if (entry) entry.dependsOn.push(expr);
          else if (frameOpen) frameOpen.deps.push(expr);
        }
        break;
      case 'select':
      case 'imply': {
        if (!entry) break;
        const m = /^([A-Za-z0-9_]+)(?:\s+if\s+(.+))?$/.exec(rest);
        if (m) {
          const list = index.selectors.get(m[1]!) ?? [];
          list.push({ by: entry.symbol, condition: m[2], file: rel, line: i + 1 });
          index.selectors.set(m[1]!, list);
        }
        break;
      }
      case 'bool':
      case 'tristate':
      case 'string':
      case 'int':
      case 'hex':
      case 'prompt': {
        // `bool "prompt" if EXPR`: without EXPR the user cannot set the option at all
        const cond = /"(?:[^"\\]|\\.)*"\s+if\s+(.+)$/.exec(rest);
        if (cond && entry) entry.dependsOn.push(`${PROMPT_IF}${cond[1]!}`);
        break;
      }
      default:
        break;
    }
  }
}
