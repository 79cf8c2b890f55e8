"""Drives an hdls endpoint with the official Python MCP SDK, a client we did not write.

Usage: python client.py <base url> <api key>. Exits non-zero (with a reason) on any mismatch.
"""

import asyncio
import sys

from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client


class CheckFailed(Exception):
    """A failed check. A type of its own, so that the step expecting a refusal can never take
    it for the refusal (a bare `except` there once swallowed the checks of a session that
    should not have been opened at all)."""


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def leaves(error):
    """The exceptions inside (possibly nested) exception groups, which anyio wraps errors in."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error


async def with_session(url, key, work, statuses=None):
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {key}"}) as http:
        if statuses is not None:
            # The SDK reports any HTTP error as one generic JSON-RPC error; the status is
            # only visible on the wire.
            async def record(response):
                statuses.append(response.status_code)

            http.event_hooks = {**http.event_hooks, "response": [record]}
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)


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

    # An unknown key: the session must not open, and the refusal must be authentication's 401.
    opened = False
    statuses = []

    async def accepted(session):
        nonlocal opened
        opened = True

    try:
        await with_session(base + "/api/mcp", "hdls_0000000000000000_" + "A" * 43, accepted, statuses)
    except Exception as error:  # the SDK's transport error, inside exception groups
        failed = [e for e in leaves(error) if isinstance(e, CheckFailed)]
        if failed:
            raise failed[0]
    check(not opened, "an unknown key was accepted")
    check(statuses and set(statuses) == {401}, f"an unknown key got HTTP {statuses}, not 401")
    print("ok: the Python SDK listed, called and was refused as expected")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python client.py <base url> <api key>")
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2]))
    except Exception as error:
        # A check that failed inside a session arrives wrapped in exception groups.
        failed = [e for e in leaves(error) if isinstance(e, CheckFailed)]
        if not failed:
            raise
        raise SystemExit("interop failure: " + "; ".join(str(e) for e in failed)) from error
