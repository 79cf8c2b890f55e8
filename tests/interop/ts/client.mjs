// Drives an hdls endpoint with the official TypeScript MCP SDK, as a client we did not write.
// Usage: node client.mjs <base url> <api key>. Exits non-zero (with a reason) on any mismatch.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [base, key] = process.argv.slice(2);
if (!base || !key) {
  console.error("usage: node client.mjs <base url> <api key>");
  process.exit(2);
}

function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

async function connect(path, token) {
  const transport = new StreamableHTTPClientTransport(new URL(base + path), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  const client = new Client({ name: "hdls-interop-ts", version: "1.0.0" });
  await client.connect(transport);
  return client;
}

const concierge = await connect("/api/mcp", key);
const who = await concierge.callTool({ name: "whoami", arguments: {} });
check(!who.isError, `whoami failed: ${JSON.stringify(who)}`);
check(who.structuredContent?.role === "owner", `whoami role: ${JSON.stringify(who.structuredContent)}`);
check(who.content?.[0]?.type === "text", "whoami has no text rendering");

const crm = await connect("/api/mcp/crm", key);
const { tools } = await crm.listTools();
const names = tools.map((t) => t.name);
for (const expected of ["create_account", "search_accounts", "query_records"]) {
  check(names.includes(expected), `tools/list lacks ${expected}: ${names}`);
}
const created = await crm.callTool({
  name: "create_account",
  arguments: { name: "Acme Robotics", domain: "acme.example" },
});
check(!created.isError, `create_account failed: ${JSON.stringify(created)}`);
const found = await crm.callTool({ name: "search_accounts", arguments: { query: "Acme" } });
check(found.structuredContent?.accounts?.length === 1, `search_accounts: ${JSON.stringify(found)}`);
const refused = await crm.callTool({ name: "get_account", arguments: { id: "not-a-uuid" } });
check(refused.isError === true, "a bad id was not refused");
check(refused.structuredContent?.error?.code === "invalid_input", `error: ${JSON.stringify(refused)}`);

// A bad credential is refused at connect time, with HTTP 401 (recorded from the transport's
// own requests, so a connection error or a crash cannot pass for the refusal).
const statuses = [];
const recordingFetch = async (url, init) => {
  const response = await fetch(url, init);
  statuses.push(response.status);
  return response;
};
let rejected = false;
try {
  const transport = new StreamableHTTPClientTransport(new URL(base + "/api/mcp"), {
    requestInit: {
      headers: { Authorization: "Bearer hdls_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" },
    },
    fetch: recordingFetch,
  });
  await new Client({ name: "hdls-interop-ts", version: "1.0.0" }).connect(transport);
} catch {
  rejected = true;
}
check(rejected, "an unknown key was accepted");
check(statuses.includes(401), `an unknown key was not refused with 401: ${statuses}`);

await concierge.close();
await crm.close();
console.log("ok: the TypeScript SDK listed, called and was refused as expected");
