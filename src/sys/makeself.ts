import { closeSync, openSync, readSync } from 'node:fs';
import { basename } from 'node:path';
import { GuestError } from '../model/errors.js';
import { runLogged } from './exec.js';
import type { StepLog } from '../model/step.js';

/**
 * Checks that a file is a self-extracting makeself archive (NVIDIA's .run is one) before anything
 * runs it: a shell stub that names Makeself near the top.
 */
export function assertMakeselfArchive(file: string, what: string): void {
  const fd = openSync(file, 'r');
  const head = Buffer.alloc(4096);
  const n = readSync(fd, head, 0, head.length, 0);
  closeSync(fd);
  const text = head.subarray(0, n).toString('latin1');
  if (!text.startsWith('#!/bin/sh') || !/Makeself/i.test(text)) {
    throw new GuestError('E_NOT_MAKESELF', `${what} ${basename(file)} is not a self-extracting NVIDIA .run archive (no makeself shell stub at its start): check the file`);
  }
}

/** `sh X.run --check`: the archive's own embedded checksums. */
export async function checkMakeselfArchive(log: StepLog, file: string, what: string, signal?: AbortSignal): Promise<void> {
  try {
    await runLogged(log, 'sh', [file, '--check'], { signal });
  } catch (err) {
    if (err instanceof GuestError && err.code === 'E_INTERRUPTED') throw err;
    throw new GuestError('E_ARCHIVE_CORRUPT', `${what} ${basename(file)}: its embedded checksum does not verify (sh ${basename(file)} --check failed): the file is damaged`, { cause: err });
  }
}

/** The `Identification:` line of `--info` (NVIDIA's names the driver version there). */
export async function makeselfLabel(log: StepLog, file: string, signal?: AbortSignal): Promise<string> {
  const info = await runLogged(log, 'sh', [file, '--info'], { signal, capture: true });
  return /^Identification:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? '';
}
