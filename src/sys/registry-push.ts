import { createReadStream, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Method, Response } from 'got';
import { loadGot } from './http.js';
import { proxyAgent } from './proxy.js';
import { GuestError } from '../model/errors.js';
import { runLogged } from './exec.js';
import { redactSecret, writeAuthFile, type RegistryCredentials } from './registry-auth.js';
import type { StepLog } from '../model/step.js';

export interface PushTarget {
  /** registry host[:port] */
  host: string;
  /** repository path on it, e.g. nvidia/vgpu-manager */
  repository: string;
  tag: string;
  /** plain HTTP (--insecure-registry) */
  insecure: boolean;
  creds?: RegistryCredentials;
}

const where = (t: PushTarget) => `${t.host}/${t.repository}:${t.tag}`;

/** Pushes an OCI image layout with skopeo; returns the manifest digest the registry stored. */
export async function pushWithSkopeo(log: StepLog, layoutDir: string, ref: string, target: PushTarget, signal?: AbortSignal): Promise<string> {
  const auth = target.creds ? writeAuthFile(target.host, target.creds) : undefined;
  const digestFile = join(layoutDir, '..', `push-digest.${process.pid}`);
  try {
    await runLogged(
      log,
      'skopeo',
      ['copy', '--retry-times', '0', '--digestfile', digestFile, ...(target.insecure ? ['--dest-tls-verify=false'] : []), ...(auth ? ['--dest-authfile', auth.file] : []), `oci:${layoutDir}:${ref}`, `docker://${where(target)}`],
      { signal },
    );
    return readFileSync(digestFile, 'utf8').trim();
  } catch (err) {
    if (err instanceof GuestError && err.code === 'E_INTERRUPTED') throw err;
    throw explainPushFailure(log.tail(20).join('\n'), target, err);
  } finally {
    auth?.remove();
  }
}

/** The registry said 401/403, whichever client pushed. */
function refusedCredentials(target: PushTarget, cause?: unknown): GuestError {
  return new GuestError('E_PUSH_AUTH', `${target.host} refused the credentials${target.creds ? ` from ${target.creds.source}` : ' (none were given: use --registry-auth FILE or REGISTRY_USERNAME/REGISTRY_PASSWORD)'}`, cause === undefined ? {} : { cause });
}

/** What skopeo's last lines say went wrong, as one of our codes. Exported for its tests. */
export function explainPushFailure(output: string, target: PushTarget, cause: unknown): GuestError {
  const text = redactSecret(output, target.creds);
  // a connection that never opened is checked first: its lines hold no HTTP status at all
  if (/connection refused|no such host|server misbehaving|i\/o timeout|dial tcp/i.test(text) && !/reset|EOF|broken pipe/i.test(text)) {
    return new GuestError('E_PUSH_UNREACHABLE', `cannot reach the registry ${target.host} (check vgpu.registry, the network, or --insecure-registry for plain HTTP)`, { cause });
  }
  // the HTTP status, not any "401" (a digest, a size or a port can hold those digits)
  if (/unauthorized|authentication required|\bstatus(?: code)?:? 401\b|\b401 unauthorized\b/i.test(text)) {
    return refusedCredentials(target, cause);
  }
  if (/http: server gave HTTP response to HTTPS client/i.test(text)) {
    return new GuestError('E_PUSH_UNREACHABLE', `${target.host} speaks plain HTTP: pass --insecure-registry`, { cause });
  }
  const last = text.trim().split('\n').filter(Boolean).pop() ?? '';
  return new GuestError('E_PUSH_FAILED', `push of ${where(target)} failed (${last.slice(0, 200)}); run push again: layers already uploaded are skipped`, { cause });
}

/**
 * Pushes an OCI image layout over the OCI distribution API with got: blob existence check,
 * monolithic upload, manifest PUT; Basic or Bearer token auth as the registry's WWW-Authenticate asks.
 */
export async function pushWithApi(log: StepLog, layoutDir: string, target: PushTarget, signal?: AbortSignal): Promise<string> {
  const { default: got } = await loadGot();
  const base = `${target.insecure ? 'http' : 'https'}://${target.host}`;
  let authorization: string | undefined;
  const request = (method: Method, url: string, options: { body?: Buffer | NodeJS.ReadableStream; headers?: Record<string, string> } = {}): Promise<Response<string>> =>
    got(url.startsWith('http') ? url : `${base}${url}`, {
      method,
      agent: proxyAgent(url.startsWith('http') ? url : `${base}${url}`),
      body: options.body as Buffer | undefined,
      headers: { ...(options.headers ?? {}), ...(authorization ? { authorization } : {}) },
      throwHttpErrors: false,
      followRedirect: false,
      retry: { limit: 0 },
      timeout: { connect: 10_000, socket: 60_000 },
      signal,
    });
  try {
    const ping = await request('GET', '/v2/');
    if (ping.statusCode === 401) authorization = await authenticate(ping.headers['www-authenticate'] ?? '', target);
    const index = JSON.parse(readFileSync(join(layoutDir, 'index.json'), 'utf8')) as { manifests: { digest: string; mediaType: string }[] };
    const manifestDesc = index.manifests[0]!;
    const blob = (d: string) => join(layoutDir, 'blobs', ...d.split(':'));
    const manifest = JSON.parse(readFileSync(blob(manifestDesc.digest), 'utf8')) as { config: { digest: string }; layers: { digest: string }[] };
    for (const digest of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
      const head = await request('HEAD', `/v2/${target.repository}/blobs/${digest}`);
      if (head.statusCode === 200) {
        log.info(`blob ${digest} already on ${target.host}`);
        continue;
      }
      checkAuth(head, target);
      const start = await request('POST', `/v2/${target.repository}/blobs/uploads/`);
      checkAuth(start, target);
      const location = start.headers.location;
      if (start.statusCode !== 202 || !location) throw new GuestError('E_PUSH_FAILED', `${target.host} did not start an upload (HTTP ${start.statusCode})`);
      const size = statSync(blob(digest)).size;
      const put = await request('PUT', `${location}${location.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`, { body: createReadStream(blob(digest)), headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) } });
      if (put.statusCode !== 201) throw new GuestError('E_PUSH_FAILED', `${target.host} rejected blob ${digest} (HTTP ${put.statusCode}: ${put.body.slice(0, 200)})`);
      log.info(`uploaded ${digest} (${size} bytes)`);
    }
    const body = readFileSync(blob(manifestDesc.digest));
    const put = await request('PUT', `/v2/${target.repository}/manifests/${target.tag}`, { body, headers: { 'content-type': manifestDesc.mediaType } });
    checkAuth(put, target);
    if (put.statusCode !== 201) throw new GuestError('E_PUSH_FAILED', `${target.host} rejected the manifest (HTTP ${put.statusCode}: ${put.body.slice(0, 200)})`);
    return String(put.headers['docker-content-digest'] ?? manifestDesc.digest);
  } catch (err) {
    if (err instanceof GuestError) throw err;
    if (signal?.aborted) throw new GuestError('E_INTERRUPTED', 'push interrupted', { cause: err });
    const code = (err as NodeJS.ErrnoException).code ?? '';
    if (['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH'].includes(code)) {
      throw new GuestError('E_PUSH_UNREACHABLE', `cannot reach the registry ${target.host} (${code}: check vgpu.registry, the network, or --insecure-registry for plain HTTP)`, { cause: err });
    }
    throw new GuestError('E_PUSH_FAILED', `push of ${where(target)} failed (${code || (err as Error).message}); run push again: layers already uploaded are skipped`, { cause: err });
  }
}

function checkAuth(res: Response<string>, target: PushTarget): void {
  if (res.statusCode === 401 || res.statusCode === 403) {
    throw refusedCredentials(target);
  }
}

/** Answers a WWW-Authenticate challenge: Basic with the credentials, or a Bearer token from the realm. */
async function authenticate(challenge: string, target: PushTarget): Promise<string> {
  if (!target.creds) throw new GuestError('E_PUSH_AUTH', `${target.host} requires credentials (use --registry-auth FILE or REGISTRY_USERNAME/REGISTRY_PASSWORD)`);
  const basic = `Basic ${Buffer.from(`${target.creds.username}:${target.creds.password}`).toString('base64')}`;
  if (/^basic/i.test(challenge)) return basic;
  const params = Object.fromEntries([...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
  if (!/^bearer/i.test(challenge) || !params.realm) throw new GuestError('E_PUSH_AUTH', `${target.host} asks for an authentication scheme gpu-guest does not speak (${challenge.split(' ')[0]})`);
  const { default: got } = await loadGot();
  const url = new URL(params.realm);
  if (params.service) url.searchParams.set('service', params.service);
  url.searchParams.set('scope', `repository:${target.repository}:pull,push`);
  const res = await got(url, { headers: { authorization: basic }, throwHttpErrors: false, retry: { limit: 1 }, agent: proxyAgent(url.href) });
  if (res.statusCode !== 200) throw new GuestError('E_PUSH_AUTH', `${target.host}'s token service refused the credentials from ${target.creds.source} (HTTP ${res.statusCode})`);
  const token = (JSON.parse(res.body) as { token?: string; access_token?: string });
  return `Bearer ${token.token ?? token.access_token}`;
}
