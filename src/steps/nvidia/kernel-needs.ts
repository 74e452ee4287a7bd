import type { KernelNeed } from '../../sys/kconfig/verify.js';

/**
 * What NVIDIA's kernel modules need of the guest kernel whatever the fragments ask: checked once
 * the .config is final, so a fragment that turns one off fails in seconds, not after the compile.
 */
export function nvidiaKernelNeeds(moduleType: 'open' | 'proprietary'): KernelNeed[] {
  return [
    { symbol: 'MODULES', reason: "NVIDIA's driver is loadable modules" },
    { symbol: 'X86_PAT', reason: "NVIDIA's nv-pat.c does not compile without it (implicit declaration of __flush_tlb)" },
    { symbol: 'FW_LOADER', reason: 'NVIDIA\'s driver loads its GSP firmware with request_firmware' },
    ...(moduleType === 'open' ? [{ symbol: 'MMU_NOTIFIER', reason: "NVIDIA's open nvidia-uvm calls __mmu_notifier_register (CUDA's unified memory)" }] : []),
  ];
}
