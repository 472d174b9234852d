"""An MCP server over Streamable HTTP for the integration tests, built with the official Python
SDK (`mcp`, pinned in scripts/tools): its low-level `Server` behind the SDK's Streamable HTTP
session manager, served by uvicorn on 127.0.0.1.

    .venv/bin/python tests/mcp/server.py --port PORT --record FILE [--token T] [--page-size N]

MCP endpoint `/mcp`. Tools:
  lookup_order       readOnlyHint: text and structuredContent {"order": id, "status": "paid"}
  refund_order       no annotations (destructive by MCP's defaults)
  slow_refund        destructiveHint: records that it started, sleeps `seconds`, then answers
  flaky              answers a result with isError: true
  idempotent_update  idempotentHint: true, readOnlyHint: false
  slow_lookup        readOnlyHint: records that it started, sleeps `delay_ms` (default 200), records
                     that it finished, answers {"q": q, "answer": "found"} (the benches' tool)
  late_tool          only after POST /admin/add-tool
`tools/list` is paginated (`--page-size`, default 2): a client has to follow `nextCursor`.

Routes for the tests (never behind the token):
  GET  /admin/ready              200 once serving
  POST /admin/add-tool           adds `late_tool` and sends notifications/tools/list_changed to
                                 every session (on its standalone GET stream)
  POST /admin/expire-sessions    forgets every session: an old Mcp-Session-Id then answers 404

With `--token`, a request to /mcp without `Authorization: Bearer <token>` answers 401.

Every request to /mcp (JSON-RPC method, id, params, tool name and arguments, the
Mcp-Session-Id, Mcp-Protocol-Version and Authorization headers) and every tool that ran is
appended to the record file as one JSON line, flushed at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.models import InitializationOptions
from mcp.shared.exceptions import MCPError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send


class Recorder:
    """JSON lines appended to a file, one per event, flushed at once."""

    def __init__(self, path: str) -> None:
        self.file = open(path, "a", encoding="utf-8", buffering=1)

    def write(self, event: str, **fields: Any) -> None:
        line = {"event": event, "at": time.time(), "pid": os.getpid(), **fields}
        self.file.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.file.flush()


def tool(
    name: str,
    description: str,
    properties: dict[str, Any],
    required: list[str],
    annotations: types.ToolAnnotations | None = None,
    output_schema: dict[str, Any] | None = None,
) -> types.Tool:
    return types.Tool(
        name=name,
        description=description,
        input_schema={"type": "object", "properties": properties, "required": required},
        annotations=annotations,
        output_schema=output_schema,
    )


ORDER_ID = {"order_id": {"type": "string", "description": "The order's id"}}

TOOLS = [
    tool(
        "lookup_order",
        "Looks an order up (reads only).",
        ORDER_ID,
        ["order_id"],
        types.ToolAnnotations(read_only_hint=True),
        {
            "type": "object",
            "properties": {"order": {"type": "string"}, "status": {"type": "string"}},
            "required": ["order", "status"],
        },
    ),
    tool(
        "refund_order",
        "Refunds an order (no annotations: destructive by default).",
        {**ORDER_ID, "amount": {"type": "number"}},
        ["order_id"],
    ),
    tool(
        "slow_refund",
        "Refunds an order, taking `seconds` to do it.",
        {**ORDER_ID, "seconds": {"type": "number"}},
        ["order_id", "seconds"],
        types.ToolAnnotations(destructive_hint=True),
    ),
    tool("flaky", "Always fails (a result with isError).", {}, []),
    tool(
        "idempotent_update",
        "Sets a key to a value; the same call twice changes nothing more.",
        {"key": {"type": "string"}, "value": {"type": "string"}},
        ["key", "value"],
        types.ToolAnnotations(idempotent_hint=True, read_only_hint=False),
    ),
    tool(
        "slow_lookup",
        "Looks `q` up, taking `delay_ms` (default 200) to do it (reads only).",
        {"q": {"type": "string"}, "delay_ms": {"type": "number"}},
        ["q"],
        types.ToolAnnotations(read_only_hint=True),
    ),
]

LATE_TOOL = tool(
    "late_tool",
    "A tool added while the server runs (POST /admin/add-tool).",
    {},
    [],
    types.ToolAnnotations(read_only_hint=True),
)


def text(value: str) -> list[types.TextContent]:
    return [types.TextContent(type="text", text=value)]


def session_of(ctx: ServerRequestContext[Any, Any]) -> str | None:
    headers = getattr(ctx.request, "headers", None)
    return headers.get("mcp-session-id") if headers is not None else None


class TestServer(Server[Any]):
    """The low-level server, advertising `tools.listChanged` (the session manager builds the
    initialize answer from the default initialization options)."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


def build(record: Recorder, token: str | None, page_size: int) -> Any:
    tools: list[types.Tool] = list(TOOLS)
    # Each session's latest request context's session: server-initiated notifications go
    # through its connection's standalone channel (the session's GET stream).
    sessions: dict[str, Any] = {}

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        cursor = params.cursor if params is not None else None
        try:
            start = int(cursor) if cursor else 0
        except ValueError:
            raise MCPError(code=types.INVALID_PARAMS, message=f"bad cursor {cursor!r}") from None
        if start < 0 or start > len(tools):
            raise MCPError(code=types.INVALID_PARAMS, message=f"bad cursor {cursor!r}")
        end = start + page_size
        return types.ListToolsResult(
            tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None
        )

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        name, args = params.name, dict(params.arguments or {})
        session = session_of(ctx)
        if name not in {t.name for t in tools}:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name}")
        record.write("tool", tool=name, arguments=args, session=session)
        order = str(args.get("order_id", ""))
        if name == "lookup_order":
            return types.CallToolResult(
                content=text(f"order {order} is paid"),
                structured_content={"order": order, "status": "paid"},
            )
        if name == "refund_order":
            return types.CallToolResult(content=text(f"refunded order {order}"))
        if name == "slow_refund":
            await anyio.sleep(float(args.get("seconds", 0)))
            record.write("tool_finished", tool=name, arguments=args, session=session)
            return types.CallToolResult(content=text(f"refunded order {order} slowly"))
        if name == "flaky":
            return types.CallToolResult(content=text("flaky failed, as it always does"), is_error=True)
        if name == "slow_lookup":
            await anyio.sleep(float(args.get("delay_ms", 200)) / 1000)
            record.write("tool_finished", tool=name, arguments=args, session=session)
            q = str(args.get("q", ""))
            return types.CallToolResult(content=text(f"{q}: found"), structured_content={"q": q, "answer": "found"})
        if name == "idempotent_update":
            return types.CallToolResult(content=text(f"{args.get('key')} = {args.get('value')}"))
        return types.CallToolResult(content=text("late tool ran"))

    class TrackSessions:
        async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: Any) -> Any:
            session = session_of(ctx)
            if session is not None:
                sessions[session] = ctx.session
            return await call_next(ctx)

    server = TestServer("integration-tests-mcp", version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)
    server.middleware.append(TrackSessions())

    async def ready(_: Request) -> Response:
        return JSONResponse({"ok": True})

    async def add_tool(_: Request) -> Response:
        if all(t.name != LATE_TOOL.name for t in tools):
            tools.append(LATE_TOOL)
        notified = []
        for sid, session in list(sessions.items()):
            if sid not in server.session_manager._server_instances:
                sessions.pop(sid, None)
                continue
            with contextlib.suppress(Exception):
                await session.send_tool_list_changed()
                notified.append(sid)
        record.write("list_changed", sessions=notified)
        return JSONResponse({"tools": len(tools), "notified": notified})

    async def expire_sessions(_: Request) -> Response:
        manager = server.session_manager
        expired = list(manager._server_instances.items())
        for sid, transport in expired:
            await manager._discard_session(sid, transport)
        sessions.clear()
        record.write("sessions_expired", sessions=[sid for sid, _ in expired])
        return JSONResponse({"expired": len(expired)})

    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        session_idle_timeout=None,
        custom_starlette_routes=[
            Route("/admin/ready", ready, methods=["GET"]),
            Route("/admin/add-tool", add_tool, methods=["POST"]),
            Route("/admin/expire-sessions", expire_sessions, methods=["POST"]),
        ],
    )
    return Recording(app, record, token)


class Recording:
    """ASGI wrapper in front of the app: records each request to /mcp and, with a token,
    answers 401 to one without `Authorization: Bearer <token>`."""

    def __init__(self, app: Any, record: Recorder, token: str | None) -> None:
        self.app, self.record, self.token = app, record, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != "/mcp":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        seen = {
            "http": scope["method"],
            "session": headers.get("mcp-session-id"),
            "protocol_version": headers.get("mcp-protocol-version"),
            "authorization": headers.get("authorization"),
        }
        # The whole body, read here and handed on unchanged.
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)

        authorized = self.token is None or headers.get("authorization") == f"Bearer {self.token}"
        self.log(seen, body, authorized)
        if not authorized:
            response = JSONResponse(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32001, "message": "Unauthorized"}},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="mcp"'},
            )
            await response(scope, receive, send)
            return

        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def log(self, seen: dict[str, Any], body: bytes, authorized: bool) -> None:
        if not authorized:
            seen["unauthorized"] = True
        if not body:
            self.record.write("http", **seen)
            return
        try:
            parsed = json.loads(body)
        except ValueError:
            self.record.write("http", **seen, invalid_body=body.decode("utf-8", "replace"))
            return
        for message in parsed if isinstance(parsed, list) else [parsed]:
            if not isinstance(message, dict):
                continue
            fields = {**seen, "method": message.get("method"), "params": message.get("params")}
            if "id" in message:
                fields["id"] = message["id"]
            if message.get("method") == "tools/call" and isinstance(message.get("params"), dict):
                fields["tool"] = message["params"].get("name")
                fields["arguments"] = message["params"].get("arguments")
            self.record.write("rpc" if "method" in message else "reply", **fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(os.environ.get("MCP_PORT", "0") or 0))
    parser.add_argument("--record", default=os.environ.get("MCP_RECORD", os.devnull))
    parser.add_argument("--token", default=os.environ.get("MCP_TOKEN") or None)
    parser.add_argument("--page-size", type=int, default=int(os.environ.get("MCP_PAGE_SIZE", "2")))
    args = parser.parse_args()
    if args.page_size < 1:
        parser.error("--page-size must be at least 1")
    app = build(Recorder(args.record), args.token, args.page_size)
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
