import { Agent as HttpAgent, type ClientRequest } from 'node:http';
import type { Agent as HttpsAgent } from 'node:https';
import { createRequire } from 'node:module';

/** The proxy variables gpu-guest honours, in the spellings curl and apt read (lower case first). */
const PROXY_VARIABLES = ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'no_proxy', 'NO_PROXY'];

/** A proxy variable, the lower-case spelling first; an empty one counts as unset. */
function variable(env: NodeJS.ProcessEnv, name: string): string | undefined {
  for (const spelling of [name.toLowerCase(), name.toUpperCase()]) {
    const v = env[spelling]?.trim();
    if (v) return v;
  }
  return undefined;
}

/**
 * The proxy a request to `url` goes through: HTTPS_PROXY for https, HTTP_PROXY for http, none when
 * NO_PROXY names the host — `*`, a host or IP (with or without a port), or a domain that matches
 * itself and its subdomains (`example.com` and `.example.com` alike).
 */
export function proxyFor(url: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const target = new URL(url);
  const proxy = variable(env, target.protocol === 'https:' ? 'https_proxy' : 'http_proxy');
  if (!proxy) return undefined;
  const host = target.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const port = target.port || (target.protocol === 'https:' ? '443' : '80');
  for (const raw of (variable(env, 'no_proxy') ?? '').split(',')) {
    const entry = raw.trim().toLowerCase();
    if (!entry) continue;
    if (entry === '*') return undefined;
    const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(entry);
    if (!m) continue;
    const name = m[1]!.replace(/^\[|\]$/g, '').replace(/^\*?\./, '');
    if (m[2] && m[2] !== port) continue;
    if (host === name || host.endsWith(`.${name}`)) return undefined;
  }
  return proxy;
}

/**
 * got's `agent` option for a request to `url`: through the proxy the environment names, or Node's
 * default. https goes through a CONNECT tunnel; http is sent to the proxy in absolute form
 * (`GET http://host/path`), as proxies expect (squid allows CONNECT to TLS ports only).
 */
export function proxyAgent(url: string, env: NodeJS.ProcessEnv = process.env): { http?: HttpAgent; https?: HttpsAgent } | undefined {
  const proxy = proxyFor(url, env);
  if (!proxy) return undefined;
  if (new URL(url).protocol !== 'https:') return { http: new ForwardProxyAgent(new URL(proxy)) };
  // loaded when a proxy is used at all: most builds never pay for it at start-up
  const { HttpsProxyAgent } = createRequire(import.meta.url)('hpagent') as typeof import('hpagent');
  return { https: new HttpsProxyAgent({ proxy }) };
}

/** Plain HTTP through a forward proxy: the connection goes to the proxy, the request line names the whole URL. */
class ForwardProxyAgent extends HttpAgent {
  constructor(private readonly proxy: URL) {
    super({ keepAlive: false });
  }

  /** Node's own (untyped) hook by which a request asks its agent for a socket: rewrite, then connect to the proxy. */
  addRequest(req: ClientRequest, options: { host?: string; port?: number | string }): void {
    const host = req.getHeader('host') ?? `${options.host}${options.port && String(options.port) !== '80' ? `:${options.port}` : ''}`;
    req.path = new URL(req.path, `http://${String(host)}`).href;
    if (this.proxy.username) req.setHeader('proxy-authorization', `Basic ${Buffer.from(`${decodeURIComponent(this.proxy.username)}:${decodeURIComponent(this.proxy.password)}`).toString('base64')}`);
    const base = HttpAgent.prototype as unknown as { addRequest(r: ClientRequest, o: object): void };
    base.addRequest.call(this, req, { ...options, host: this.proxy.hostname, port: Number(this.proxy.port || 80) });
  }
}

/** The proxy variables of the environment, for a command that reads them itself (apt in a chroot). */
export function proxyEnvironment(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const name of PROXY_VARIABLES) {
    const v = variable(env, name);
    if (v) out[name] = v;
  }
  return out;
}
