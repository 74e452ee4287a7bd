import { existsSync } from 'node:fs';
import { findOnPath } from './which.js';
import { GuestError } from '../model/errors.js';

/** A host tool a step needs, and the Debian package that provides it. */
export interface HostTool {
  name: string;
  /** A command on PATH, or an absolute file (a header) that must exist. */
  probe: string;
  aptPackage: string;
  /** Step kinds (and commands: verify) that need it. */
  neededBy: string[];
  /** Another tool that can stand in (debootstrap for mmdebstrap). */
  alternative?: string;
}

const KERNEL = ['kernel-config', 'kernel-build', 'kernel-debs'];

export const HOST_TOOLS: HostTool[] = [
  { name: 'make', probe: 'make', aptPackage: 'make', neededBy: KERNEL },
  { name: 'gcc', probe: 'gcc', aptPackage: 'gcc', neededBy: KERNEL },
  { name: 'flex', probe: 'flex', aptPackage: 'flex', neededBy: KERNEL },
  { name: 'bison', probe: 'bison', aptPackage: 'bison', neededBy: KERNEL },
  { name: 'bc', probe: 'bc', aptPackage: 'bc', neededBy: KERNEL },
  { name: 'tar', probe: 'tar', aptPackage: 'tar', neededBy: ['kernel-source'] },
  { name: 'xz', probe: 'xz', aptPackage: 'xz-utils', neededBy: ['kernel-source', 'driver', 'driver-modules', 'installer-modules'] },
  { name: 'patch', probe: 'patch', aptPackage: 'patch', neededBy: ['installer-modules', 'driver-modules', 'driver-packages'] },
  { name: 'strip', probe: 'strip', aptPackage: 'binutils', neededBy: ['driver', 'driver-packages'] },
  { name: 'modinfo', probe: 'modinfo', aptPackage: 'kmod', neededBy: ['driver', 'driver-modules', 'installer-modules', 'driver-packages'] },
  { name: 'libelf headers', probe: '/usr/include/libelf.h', aptPackage: 'libelf-dev', neededBy: KERNEL },
  { name: 'openssl headers', probe: '/usr/include/openssl/ssl.h', aptPackage: 'libssl-dev', neededBy: KERNEL },
  { name: 'dpkg-deb', probe: 'dpkg-deb', aptPackage: 'dpkg', neededBy: ['kernel-debs', 'driver', 'toolkit'] },
  { name: 'dpkg-buildpackage', probe: 'dpkg-buildpackage', aptPackage: 'dpkg-dev', neededBy: ['kernel-debs'] },
  { name: 'fakeroot', probe: 'fakeroot', aptPackage: 'fakeroot', neededBy: ['kernel-debs'] },
  { name: 'rsync', probe: 'rsync', aptPackage: 'rsync', neededBy: ['kernel-debs'] },
  { name: 'cpio', probe: 'cpio', aptPackage: 'cpio', neededBy: ['kernel-debs', 'image'] },
  { name: 'depmod', probe: 'depmod', aptPackage: 'kmod', neededBy: ['kernel-debs'] },
  { name: 'mmdebstrap', probe: 'mmdebstrap', aptPackage: 'mmdebstrap', neededBy: ['rootfs'], alternative: 'debootstrap' },
  { name: 'debootstrap', probe: 'debootstrap', aptPackage: 'debootstrap', neededBy: [], alternative: 'mmdebstrap' },
  { name: 'makeself', probe: 'makeself', aptPackage: 'makeself', neededBy: ['tests'] },
  { name: 'mkfs.ext4', probe: 'mkfs.ext4', aptPackage: 'e2fsprogs', neededBy: ['image'] },
  { name: 'veritysetup', probe: 'veritysetup', aptPackage: 'cryptsetup-bin', neededBy: ['image-verity'] },
  { name: 'qemu-system-x86_64', probe: 'qemu-system-x86_64', aptPackage: 'qemu-system-x86', neededBy: ['verify'] },
  { name: 'busybox (static)', probe: '/bin/busybox', aptPackage: 'busybox-static', neededBy: ['verify'] },
  // the container checks of a guest whose kernel can run containers: the OCI runtime and an erofs layer
  { name: 'crun', probe: 'crun', aptPackage: 'crun', neededBy: ['verify-containers'] },
  { name: 'mkfs.erofs', probe: 'mkfs.erofs', aptPackage: 'erofs-utils', neededBy: ['verify-containers'] },
  { name: 'unshare', probe: 'unshare', aptPackage: 'util-linux', neededBy: ['kernel-build', 'kernel-debs'] },
  { name: 'chroot', probe: 'chroot', aptPackage: 'coreutils', neededBy: ['driver', 'driver-packages', 'toolkit'] },
  { name: 'skopeo', probe: 'skopeo', aptPackage: 'skopeo', neededBy: ['vgpu-image'] },
];

export async function toolPresent(tool: HostTool): Promise<boolean> {
  if (tool.probe.startsWith('/')) return existsSync(tool.probe);
  return (await findOnPath(tool.probe)) !== null;
}

export interface ToolCheck {
  tool: HostTool;
  present: boolean;
  /** Missing, but an alternative that is present stands in. */
  coveredBy?: string;
}

/** Checks the tools the given step kinds need (all tools when kinds is undefined). */
export async function checkHostTools(tasks?: string[]): Promise<ToolCheck[]> {
  const wanted = HOST_TOOLS.filter((t) => !tasks || t.neededBy.some((n) => tasks.includes(n)) || t.neededBy.length === 0);
  const present = new Map<string, boolean>();
  for (const t of HOST_TOOLS) present.set(t.name, await toolPresent(t));
  return wanted
    .filter((t) => t.neededBy.length > 0 || present.get(t.name) || !t.alternative)
    .map((tool) => {
      const ok = present.get(tool.name)!;
      const coveredBy = !ok && tool.alternative && present.get(tool.alternative) ? tool.alternative : undefined;
      return { tool, present: ok, coveredBy };
    });
}

/** The one apt-get line that installs what is missing, or undefined when nothing is. */
export function aptInstallLine(checks: ToolCheck[]): string | undefined {
  const missing = [...new Set(checks.filter((c) => !c.present && !c.coveredBy).map((c) => c.tool.aptPackage))].sort();
  return missing.length ? `apt-get install -y ${missing.join(' ')}` : undefined;
}

/**
 * Fails fast, before any work, when tools a step needs are missing: one line naming them and the
 * apt-get line that installs them (alternatives such as debootstrap for mmdebstrap count).
 */
export async function requireHostTools(task: string): Promise<void> {
  const checks = await checkHostTools([task]);
  const missing = checks.filter((c) => !c.present && !c.coveredBy && c.tool.neededBy.includes(task));
  if (!missing.length) return;
  const fix = aptInstallLine(missing)!;
  throw new GuestError('E_MISSING_TOOL', `${task} needs ${missing.map((m) => m.tool.name).join(', ')}, not found on this host (run as root: ${fix})`);
}
