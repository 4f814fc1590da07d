/**
 * A typed client for svcreg's discovery API. The types come from the server's own
 * /openapi.json (src/schema.d.ts, made by `npm run generate` with openapi-typescript); requests go
 * through openapi-fetch, so every path, parameter and answer is checked by the compiler.
 *
 * In a pod: `createDiscoveryClient()` reads SVCREG_URL (default the in-cluster Service) and the
 * mounted ServiceAccount token, re-read on every call so a rotated token is picked up.
 */
import { readFileSync } from "node:fs";

import createClient from "openapi-fetch";

import type { components, paths } from "./schema.js";

export type Registration = components["schemas"]["Registration"];
export type ServiceList = components["schemas"]["ServiceList"];
export type Catalog = components["schemas"]["Catalog"];
export type CapabilityAnswer = components["schemas"]["CapabilityAnswer"];
export type ErrorAnswer = components["schemas"]["ErrorAnswer"];

export const DEFAULT_URL = "http://svcreg.svcreg-system.svc:8080";
export const TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/** The discovery endpoint answered with an error: its status, code, message and parameter. */
export class SvcregError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly parameter?: string | null,
  ) {
    super(`HTTP ${status} ${code}: ${message}`);
  }
}

export interface Options {
  /** Base URL; default SVCREG_URL, else the in-cluster Service. */
  baseUrl?: string;
  /** A fixed token; default SVCREG_TOKEN, else the mounted ServiceAccount token file. */
  token?: string;
  tokenFile?: string;
  fetch?: typeof globalThis.fetch;
}

function tokenOf(options: Options): () => string {
  const fixed = options.token ?? process.env.SVCREG_TOKEN;
  if (fixed) return () => fixed;
  const file = options.tokenFile ?? TOKEN_FILE;
  return () => readFileSync(file, "utf8").trim();
}

function raise(status: number, error: unknown): never {
  const detail = (error as ErrorAnswer | undefined)?.error;
  throw new SvcregError(status, detail?.code ?? "Error", detail?.message ?? "no error body", detail?.parameter);
}

/** Pick one registration by weight (weight 0 never), as the server's select=one does. */
export function pickByWeight(items: Registration[], random: () => number = Math.random): Registration | undefined {
  const weighted = items.filter((item) => (item.weight ?? 100) > 0);
  const total = weighted.reduce((sum, item) => sum + (item.weight ?? 100), 0);
  let point = random() * total;
  for (const item of weighted) {
    point -= item.weight ?? 100;
    if (point < 0) return item;
  }
  return weighted.at(-1);
}

/** Where to call a registration: its endpoint, or its served serviceRef addresses. */
export function urlsOf(item: Registration): string[] {
  if (item.endpoint) return [item.endpoint];
  return (item.instances ?? [])
    .filter((i) => i.health === "Healthy" || i.health === "Degraded")
    .map((i) => `http://${i.address.includes(":") ? `[${i.address}]` : i.address}:${i.port}`);
}

export function createDiscoveryClient(options: Options = {}) {
  const token = tokenOf(options);
  const http = createClient<paths>({
    baseUrl: (options.baseUrl ?? process.env.SVCREG_URL ?? DEFAULT_URL).replace(/\/$/, ""),
    fetch: options.fetch,
  });
  http.use({
    onRequest({ request }) {
      request.headers.set("Authorization", `Bearer ${token()}`);
      return request;
    },
  });

  return {
    /** The raw typed openapi-fetch client, for any route. */
    http,

    async services(query: paths["/v1/services"]["get"]["parameters"]["query"] = {}): Promise<ServiceList> {
      const { data, error, response } = await http.GET("/v1/services", { params: { query } });
      if (!data) raise(response.status, error);
      return data;
    },

    async capability(name: string, query: paths["/v1/capabilities/{name}"]["get"]["parameters"]["query"] = {}): Promise<CapabilityAnswer> {
      const { data, error, response } = await http.GET("/v1/capabilities/{name}", {
        params: { path: { name }, query },
      });
      if (!data) raise(response.status, error);
      return data;
    },

    async catalog(namespace?: string): Promise<Catalog> {
      const { data, error, response } = await http.GET("/v1/catalog", {
        params: { query: namespace ? { namespace } : {} },
      });
      if (!data) raise(response.status, error);
      return data;
    },

    /** The URL of one served instance providing `capability`, chosen by weight. */
    async resolve(capability: string, version?: string): Promise<string> {
      const answer = await this.capability(capability, version ? { version } : {});
      const chosen = pickByWeight(answer.items ?? []);
      const urls = chosen ? urlsOf(chosen) : [];
      if (urls.length === 0) throw new SvcregError(404, "NoHealthyInstance", `no served instance provides ${capability}`);
      return urls[0];
    },

    /** The URL of one served instance of logical service `name`, chosen by weight. */
    async resolveService(name: string): Promise<string> {
      const answer = await this.services({ service: name });
      const chosen = pickByWeight(answer.items ?? []);
      const urls = chosen ? urlsOf(chosen) : [];
      if (urls.length === 0) throw new SvcregError(404, "NoHealthyInstance", `no served instance of ${name}`);
      return urls[0];
    },
  };
}

export type DiscoveryClient = ReturnType<typeof createDiscoveryClient>;
