/**
 * Against a real discovery endpoint: tests/integration/test_typescript_client.py starts svcreg
 * on the real API server with registrations, and runs this with SVCREG_URL, SVCREG_TOKEN (a
 * reader of the namespace) and SVCREG_TEST_NAMESPACE set.
 */
import assert from "node:assert/strict";
import { test } from "node:test";

import { SvcregError, createDiscoveryClient, pickByWeight } from "../src/index.js";

const namespace = process.env.SVCREG_TEST_NAMESPACE ?? "";

test("lists, filters and resolves what the server serves", async () => {
  const client = createDiscoveryClient();
  const listed = await client.services({ namespace, service: "orders" });
  assert.deepEqual(listed.items?.map((i) => i.name).sort(), ["heavy", "light"]);
  // light has weight 0: every pick is heavy, by capability and by service name alike.
  const url = await client.resolve("greet");
  assert.equal(url, process.env.SVCREG_TEST_HEAVY_URL);
  assert.equal(await client.resolveService("orders"), url);
  const catalog = await client.catalog(namespace);
  assert.deepEqual(catalog.services.map((s) => s.service), ["orders"]);
  assert.deepEqual(catalog.services[0].instances, { Healthy: 2 });
});

test("a bad parameter is an SvcregError naming it", async () => {
  const client = createDiscoveryClient();
  await assert.rejects(
    client.services({ health: "sometimes" }),
    (error: unknown) => error instanceof SvcregError && error.status === 400 && error.parameter === "health",
  );
});

test("a caller without a token gets 401", async () => {
  const client = createDiscoveryClient({ token: "not-a-token" });
  await assert.rejects(client.services(), (error: unknown) => error instanceof SvcregError && error.status === 401);
});

test("weight 0 is never picked", () => {
  const items = [
    { name: "zero", namespace: "n", service: "s", weight: 0 },
    { name: "one", namespace: "n", service: "s", weight: 1 },
  ] as Parameters<typeof pickByWeight>[0];
  for (const point of [0, 0.5, 0.999]) assert.equal(pickByWeight(items, () => point)?.name, "one");
});
