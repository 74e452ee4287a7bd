import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { GuestError } from '../../model/errors.js';
import { parseFragment, type RequestedOption } from './options.js';

/** The architecture whose fragments a Kata fragment tree contributes (the only one gpu-guest builds). */
const ARCH = 'x86_64';

/**
 * Whether a folder is Kata's fragment tree (`tools/packaging/kernel/configs/fragments`): it holds
 * `common/` and the architecture's folder beside each other.
 */
export function isKataFragmentTree(dir: string): boolean {
  return existsSync(join(dir, 'common')) && statSync(join(dir, 'common')).isDirectory() && existsSync(join(dir, ARCH)) && statSync(join(dir, ARCH)).isDirectory();
}

/** A file whose header comment tags it `!x86_64` is not for this architecture (Kata's `grep -L -e '!<arch>'`). */
function excludedForArch(file: string): boolean {
  return readFileSync(file, 'utf8').split('\n').some((l) => l.trimStart().startsWith('#') && l.split(/\s+/).includes(`!${ARCH}`));
}

function confFiles(dir: string): string[] {
  return readdirSync(dir).filter((f) => f.endsWith('.conf')).sort().map((f) => join(dir, f));
}

/**
 * The fragment files a fragment argument stands for, in merge order: a file itself; a folder's
 * `*.conf` files by name; Kata's fragment tree as Kata's builder takes it for a non-confidential
 * x86_64 guest — `common/*.conf` except files tagged `!x86_64` (a `# !confidential` file is only
 * left out of confidential guests, which gpu-guest does not build), then `x86_64/*.conf`.
 */
export function expandFragments(paths: string[]): string[] {
  return paths.flatMap((p) => {
    if (!existsSync(p)) throw new GuestError('E_FRAGMENT_NOT_FOUND', `fragment ${p} does not exist (fix the pipeline's kernel.fragments or --fragment)`);
    if (!statSync(p).isDirectory()) return [p];
    if (isKataFragmentTree(p)) return [...confFiles(join(p, 'common')).filter((f) => !excludedForArch(f)), ...confFiles(join(p, ARCH))];
    const confs = confFiles(p);
    if (!confs.length) throw new GuestError('E_FRAGMENT_NOT_FOUND', `fragment folder ${p} holds no *.conf file`);
    return confs;
  });
}

/**
 * The placeholders Kata's builder fills in its `*.conf.in` fragments with envsubst, and what they
 * are for the guests gpu-guest builds (not confidential: no suffix).
 */
const KATA_PLACEHOLDERS: Record<string, string> = { CONF_GUEST_SUFFIX: '' };

/** A fragment's text; a Kata `*.conf.in` template with its placeholders filled, an unknown one refused. */
export function fragmentText(file: string): string {
  const text = readFileSync(file, 'utf8');
  if (!file.endsWith('.conf.in')) return text;
  return text
    .split('\n')
    .map((line, i) =>
      line.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, braced: string | undefined, bare: string | undefined) => {
        const name = (braced ?? bare)!;
        if (!(name in KATA_PLACEHOLDERS)) throw new GuestError('E_FRAGMENT_SYNTAX', `${basename(file)}:${i + 1}: placeholder $${name} is not one gpu-guest fills (it knows ${Object.keys(KATA_PLACEHOLDERS).join(', ')}, as Kata's builder does for a non-confidential guest) in ${file}`);
        return KATA_PLACEHOLDERS[name]!;
      }),
    )
    .join('\n');
}

export function readFragment(file: string): RequestedOption[] {
  return parseFragment(fragmentText(file), file);
}

/** The file merge_config.sh is given: the fragment itself, or a `.conf.in` template filled into `workDir`. */
export function mergeableFragment(file: string, workDir: string, n: number): string {
  if (!file.endsWith('.conf.in')) return file;
  const filled = join(workDir, `${n}-${basename(file, '.in')}`);
  writeFileSync(filled, fragmentText(file));
  return filled;
}

/**
 * The symbols a Kata fragment tree allows to be missing from the final config (its `whitelist.conf`:
 * one `CONFIG_X` per line, for options older or newer kernels do not have), as Kata's builder does.
 */
export function kataAllowList(paths: string[]): string[] {
  return paths
    .filter((p) => existsSync(p) && statSync(p).isDirectory() && isKataFragmentTree(p) && existsSync(join(p, 'whitelist.conf')))
    .flatMap((p) => readFileSync(join(p, 'whitelist.conf'), 'utf8').split('\n'))
    .map((l) => l.trim())
    .filter((l) => /^(CONFIG_)?[A-Za-z0-9_]+$/.test(l));
}
