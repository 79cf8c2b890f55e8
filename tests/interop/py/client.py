"""Drives an hdls endpoint with the official Python MCP SDK, a client we did not write.

Usage: python client.py <base url> <api key>. Exits non-zero (with a reason) on any mismatch.
"""

import asyncio
import sys

from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client


async def with_session(url, key, work):
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {key}"}) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)


def check(condition, message):
    if not condition:
        raise SystemExit(f"interop failure: {message}")


async def main(base, key):
    async def concierge(session):
        who = await session.call_tool("whoami", {})
        check(not who.is_error, f"whoami failed: {who}")
        check(who.structured_content["role"] == "owner", f"whoami: {who.structured_content}")

    async def crm(session):
        names = [tool.name for tool in (await session.list_tools()).tools]
        for expected in ("create_account", "search_accounts", "aggregate_records"):
            check(expected in names, f"tools/list lacks {expected}: {names}")
        created = await session.call_tool("create_account", {"name": "Py Robotics", "domain": "py.example"})
        check(not created.is_error, f"create_account failed: {created}")
        found = await session.call_tool("search_accounts", {"query": "py robotics"})
        check(len(found.structured_content["accounts"]) == 1, f"search_accounts: {found}")
        counted = await session.call_tool(
            "aggregate_records", {"table": "accounts", "aggregates": [{"fn": "count"}]}
        )
        check(counted.structured_content["rows"][0]["count"] >= 1, f"aggregate_records: {counted}")
        refused = await session.call_tool("delete_account", {"id": "not-a-uuid"})
        check(refused.is_error, "a bad id was not refused")
        check(refused.structured_content["error"]["code"] == "invalid_input", f"error: {refused}")

    await with_session(base + "/api/mcp", key, concierge)
    await with_session(base + "/api/mcp/crm", key, crm)

    rejected = False
    try:
        await with_session(base + "/api/mcp", "hdls_0000000000000000_" + "A" * 43, concierge)
    except BaseException:  # the SDK raises a transport error (possibly in an exception group)
        rejected = True
    check(rejected, "an unknown key was accepted")
    print("ok: the Python SDK listed, called and was refused as expected")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python client.py <base url> <api key>")
    asyncio.run(main(sys.argv[1], sys.argv[2]))
