/**
 * SPDX 2.3 (JSON) for a guest: the packages dpkg's status file says are installed, their licences
 * where Debian's machine-readable copyright files name them, and the kernel and driver beside them.
 */

/** One installed package as dpkg's status file records it. */
export type DpkgPackage = { name: string; version: string; architecture: string; source?: string };

/** The packages dpkg's status file records as installed ("install ok installed"), sorted by name. */
export function parseDpkgStatus(text: string): DpkgPackage[] {
  const out: DpkgPackage[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const field = (name: string) => new RegExp(`^${name}: *(.*)$`, 'mi').exec(stanza)?.[1]?.trim();
    const name = field('Package');
    if (!name || !/^install ok installed$/.test(field('Status') ?? '')) continue;
    const source = field('Source')?.split(' ')[0];
    out.push({ name, version: field('Version') ?? '', architecture: field('Architecture') ?? '', ...(source && source !== name ? { source } : {}) });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Debian's short licence names (copyright-format 1.0) and their SPDX identifiers. */
const DEBIAN_TO_SPDX: Record<string, string> = {
  'apache-2.0': 'Apache-2.0', 'artistic': 'Artistic-1.0-Perl', 'artistic-2.0': 'Artistic-2.0',
  'bsd-2-clause': 'BSD-2-Clause', 'bsd-3-clause': 'BSD-3-Clause', 'bsd-4-clause': 'BSD-4-Clause',
  'cc0-1.0': 'CC0-1.0', 'expat': 'MIT', 'mit': 'MIT', 'isc': 'ISC', 'zlib': 'Zlib', 'curl': 'curl',
  'gpl-1': 'GPL-1.0-only', 'gpl-1+': 'GPL-1.0-or-later', 'gpl-2': 'GPL-2.0-only', 'gpl-2+': 'GPL-2.0-or-later',
  'gpl-3': 'GPL-3.0-only', 'gpl-3+': 'GPL-3.0-or-later', 'lgpl-2': 'LGPL-2.0-only', 'lgpl-2+': 'LGPL-2.0-or-later',
  'lgpl-2.1': 'LGPL-2.1-only', 'lgpl-2.1+': 'LGPL-2.1-or-later', 'lgpl-3': 'LGPL-3.0-only', 'lgpl-3+': 'LGPL-3.0-or-later',
  'agpl-3': 'AGPL-3.0-only', 'agpl-3+': 'AGPL-3.0-or-later', 'mpl-1.1': 'MPL-1.1', 'mpl-2.0': 'MPL-2.0',
  'openssl': 'OpenSSL', 'python-2.0': 'Python-2.0', 'psf-2': 'PSF-2.0', 'perl': 'Artistic-1.0-Perl OR GPL-1.0-or-later',
  'x11': 'X11', 'public-domain': 'LicenseRef-public-domain', 'unicode-dfs-2016': 'Unicode-DFS-2016',
  // the SPDX-like spellings some copyright files use
  'gpl-2.0': 'GPL-2.0-only', 'gpl-2.0+': 'GPL-2.0-or-later', 'gpl-3.0': 'GPL-3.0-only', 'gpl-3.0+': 'GPL-3.0-or-later',
  'lgpl-2.0+': 'LGPL-2.0-or-later', 'lgpl-3.0': 'LGPL-3.0-only', 'lgpl-3.0+': 'LGPL-3.0-or-later',
  'bsl-1.0': 'BSL-1.0', 'postgresql': 'PostgreSQL', 'libpng': 'Libpng', 'vim': 'Vim', 'epl-1.0': 'EPL-1.0', 'ftl': 'FTL', 'ofl-1.1': 'OFL-1.1',
};

/**
 * The licence a machine-readable Debian copyright file declares for the package as a whole (its
 * `Files: *` paragraph) as an SPDX expression; undefined when the file is free-form or names a
 * licence this table does not know — the SBOM then says NOASSERTION rather than guess.
 */
export function debianCopyrightLicense(text: string): string | undefined {
  if (!/^Format:\s*https?:\/\/www\.debian\.org\/doc\/packaging-manuals\/copyright-format\/1\.0\/?/m.test(text)) return undefined;
  const all = text.split(/\n\s*\n/).find((p) => /^Files:\s*\*\s*$/m.test(p));
  const name = all && /^License:\s*(\S.*)$/m.exec(all)?.[1]?.trim();
  if (!name) return undefined;
  // "GPL-2+ or Artistic", "LGPL-2.1+ and MIT" (and binds tighter than or, as in SPDX); "with" is not mapped
  const words = name.replace(/,/g, ' ').split(/\s+/).filter(Boolean);
  if (words.length % 2 === 0) return undefined;
  const expr: string[] = [];
  for (const [i, w] of words.entries()) {
    if (i % 2 === 1) {
      if (!/^(or|and)$/i.test(w)) return undefined;
      expr.push(w.toUpperCase());
      continue;
    }
    const id = DEBIAN_TO_SPDX[w.toLowerCase()];
    if (!id) return undefined;
    // a compound identifier (Perl's "A OR B") keeps its parentheses inside a larger expression
    expr.push(words.length > 1 && / (OR|AND) /.test(id) ? `(${id})` : id);
  }
  return expr.join(' ');
}

/** An SPDX element id from free text: letters, digits, '.' and '-' only. */
export function spdxId(...parts: string[]): string {
  return `SPDXRef-${parts.join('-').replace(/[^A-Za-z0-9.-]/g, '-')}`;
}

/** A package URL for a Debian package (purl's deb type). */
export function debPurl(p: DpkgPackage, distro: string): string {
  const q = [`arch=${encodeURIComponent(p.architecture)}`, `distro=${encodeURIComponent(distro)}`, ...(p.source ? [`upstream=${encodeURIComponent(p.source)}`] : [])];
  return `pkg:deb/debian/${encodeURIComponent(p.name)}@${encodeURIComponent(p.version)}?${q.join('&')}`;
}
