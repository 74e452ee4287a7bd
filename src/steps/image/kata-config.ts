/** Where Kata installs guest assets; the snippet names the built files there. */
export const KATA_ASSETS = '/usr/share/kata-containers';

/**
 * The [hypervisor.qemu] keys for this guest. NVIDIA: q35 with the GPU hot-plugged on a PCIe root
 * port (large-BAR GPUs); Intel GVT: pc with hot-plug on the root bus.
 */
export function kataConfig(opts: { vendor: 'nvidia' | 'intel'; flavour: string; imageFile: string; initrd: boolean; largeBar?: boolean; kernelParams?: string }): string {
  const nvidia = opts.vendor === 'nvidia';
  const lines = [
    `# Kata Containers configuration for the ${opts.flavour} guest built by gpu-guest.`,
    `# Merge into configuration-qemu.toml, with the kernel and image installed under ${KATA_ASSETS}/.`,
    '[hypervisor.qemu]',
    `kernel = "${KATA_ASSETS}/vmlinuz-${opts.flavour}.container"`,
    `${opts.initrd ? 'initrd' : 'image'} = "${KATA_ASSETS}/${opts.imageFile}"`,
    `machine_type = "${nvidia ? 'q35' : 'pc'}"`,
  ];
  if (nvidia) {
    const largeBar = opts.largeBar ?? true;
    lines.push(`# large-BAR GPUs (A100, H100 …): true/1 on the root port; small-BAR GPUs: hotplug_vfio_on_root_bus = false`);
    lines.push(`hotplug_vfio_on_root_bus = ${largeBar}`, `pcie_root_port = ${largeBar ? 1 : 0}`);
  } else {
    lines.push('hotplug_vfio_on_root_bus = true', 'pcie_root_port = 0');
  }
  lines.push('guest_hook_path = "/usr/share/oci/hooks"');
  if (opts.kernelParams) {
    lines.push('# measured rootfs: the image is root only through dm-verity with this root hash', `kernel_params = ${JSON.stringify(opts.kernelParams)}`);
  }
  lines.push('');
  return lines.join('\n');
}
