import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { GuestError } from '../model/errors.js';

/** What a signing key and its certificate mean for the kernel and for `modinfo`. */
export interface SigningIdentity {
  /** The kernel's MODULE_SIG_KEY_TYPE: rsa or ecdsa. */
  keyType: 'rsa' | 'ecdsa';
  /** What `modinfo -F signer` shows for a module signed with it: the certificate issuer's CN. */
  signer: string;
}

/**
 * Reads kernel.moduleSigning's key and certificate and proves they belong together: an
 * unencrypted PEM private key (RSA or EC, the types the kernel verifies) and the PEM X.509
 * certificate of its public key. Every problem names the file and what to give instead; that the
 * files exist is load's check (mustExist), made before this one.
 */
export function readSigningIdentity(keyFile: string, certificateFile: string): SigningIdentity {
  let key;
  try {
    key = createPrivateKey(readFileSync(keyFile));
  } catch (err) {
    throw new GuestError('E_PIPELINE_INVALID', `kernel.moduleSigning.key: ${keyFile} is not an unencrypted PEM private key (${(err as Error).message}; the kernel's sign-file reads it without a passphrase)`, { cause: err });
  }
  if (key.asymmetricKeyType !== 'rsa' && key.asymmetricKeyType !== 'ec') {
    throw new GuestError('E_PIPELINE_INVALID', `kernel.moduleSigning.key: ${keyFile} is an ${key.asymmetricKeyType} key; the kernel verifies module signatures made with RSA or ECDSA keys`);
  }
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(readFileSync(certificateFile));
  } catch (err) {
    throw new GuestError('E_PIPELINE_INVALID', `kernel.moduleSigning.certificate: ${certificateFile} is not an X.509 certificate (${(err as Error).message})`, { cause: err });
  }
  if (!certificate.checkPrivateKey(key)) {
    throw new GuestError('E_PIPELINE_INVALID', `kernel.moduleSigning.certificate: ${certificateFile} is not the certificate of ${keyFile} (its public key differs): give the certificate made for that key`);
  }
  const cn = /^CN=(.*)$/m.exec(certificate.issuer)?.[1];
  if (!cn) throw new GuestError('E_PIPELINE_INVALID', `kernel.moduleSigning.certificate: ${certificateFile} has no CN in its issuer, which modinfo shows as a module's signer: give it one`);
  return { keyType: key.asymmetricKeyType === 'rsa' ? 'rsa' : 'ecdsa', signer: cn };
}

/** The file the kernel build signs with: key and certificate in one PEM, named relative to the object tree. */
export const SIGNING_PEM = 'certs/gpu-guest-signing.pem';

/** The kernel options that make the kernel sign its modules with the pipeline's key and trust it. */
export function signingFragment(o: { hash: string; enforce: boolean; keyType: 'rsa' | 'ecdsa' }): string {
  return [
    'CONFIG_MODULE_SIG=y',
    'CONFIG_MODULE_SIG_ALL=y',
    `CONFIG_MODULE_SIG_${o.hash.toUpperCase()}=y`,
    `CONFIG_MODULE_SIG_KEY="${SIGNING_PEM}"`,
    `CONFIG_MODULE_SIG_KEY_TYPE_${o.keyType.toUpperCase()}=y`,
    o.enforce ? 'CONFIG_MODULE_SIG_FORCE=y' : '# CONFIG_MODULE_SIG_FORCE is not set',
    '',
  ].join('\n');
}
