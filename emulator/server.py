"""A strict Discord API v10 emulator on loopback, for driving the real bot in tests.

It speaks the gateway (HELLO, heartbeat, IDENTIFY, READY, GUILD_CREATE, RESUME) and the REST
routes the bot uses, keeps Discord's state, and refuses what Discord refuses: content over 2000
characters, too many or too large embeds, a second response to one interaction, a response
after the 3-second deadline, and any route it does not know (recorded in `errors` as a bug).

Point discord.py at it with `emulator.redirect_discord()` or, for another process, the
`DISCORD_EMULATOR_URL` environment variable read by `tests/sitecustomize.py`.

Sharding, as Discord does it (https://discord.com/developers/docs/events/gateway#sharding):
GET /gateway/bot recommends `shards` (1 unless the emulator is built with more). Every
IDENTIFY opens its own session, with its own session id, sequence numbers and replay buffer
for RESUME; one with `"shard": [id, count]` carries only the guilds with
`(guild_id >> 22) % count == id`: its READY lists them, it gets their GUILD_CREATEs, and every
guild event (messages, reactions, interactions, channels) is dispatched to it alone. Events
without a guild (direct messages; the emulator has no DM channels, but a test may dispatch
such an event) go to shard 0. A client that sends no shard is `[0, 1]`: it sees everything,
as before sharding. `add_guild` gives each guild a timestamp of its own, on the shards in turn
or on the one asked for; `session_of(shard)` is a shard's live session (what it was sent is in
`received`); `drop_gateway(shard=...)` drops one shard.

Close codes: 4010 for a shard id outside 0..count-1, and (an emulator rule: Discord does not
document one) 4010 as well for an IDENTIFY of a shard whose session is still live, so that two
processes configured with the same shard fail at once instead of both answering; 4011 when a
session would carry more than `max_guilds_per_shard` guilds (Discord: 2,500), as Discord's
"sharding required".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import WSMsgType, web

from emulator.state import (
    ACK_DEADLINE_S,
    CONTENT_LIMIT,
    EMBED_FIELD_LIMITS,
    EMBED_TOTAL_LIMIT,
    EMBEDS_LIMIT,
    MEMBER_PERMS,
    USER_MENTION,
    Channel,
    Guild,
    Interaction,
    Member,
    Message,
    Role,
    Snowflakes,
    User,
    pings,
    shard_of,
)

Handler = Callable[[web.Request], Awaitable[web.Response]]


@dataclass
class Fault:
    method: str
    path_prefix: str
    status: int
    delay: float
    times: int
    retry_after: float
    hits: int = 0


@dataclass
class Session:
    """One gateway session: a shard (`(0, 1)`: everything), its sequence numbers and the
    frames sent in it (replayed on RESUME), and the socket it is live on, if any."""

    id: str
    shard: tuple[int, int]  # (shard id, shard count)
    ws: web.WebSocketResponse | None = None
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.ws is not None and not self.ws.closed

    def carries(self, guild_id: int | None) -> bool:
        """Whether this session's shard gets `guild_id`'s events (None: a direct message)."""
        shard_id, count = self.shard
        return shard_of(guild_id, count) == shard_id

    def frame(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """The next dispatch frame of this session, kept for RESUME."""
        self.seq += 1
        frame = {"op": 0, "t": event, "s": self.seq, "d": data}
        self.sent.append(frame)
        return frame

    def received(self, event: str) -> list[dict[str, Any]]:
        """The payloads of the `event` frames dispatched to this session so far."""
        return [f["d"] for f in self.sent if f["t"] == event]


_GUILD_EVENTS = ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE")


def _guild_of(event: str, data: dict[str, Any]) -> int | None:
    """The guild an event belongs to (its shard's), None for one without (a direct message)."""
    raw = data.get("id") if event in _GUILD_EVENTS else data.get("guild_id")
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


class DiscordError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _json(data: Any, status: int = 200) -> web.Response:
    # discord.py only parses JSON when the content type is exactly application/json.
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json"},
    )


class DiscordEmulator:
    """Discord on 127.0.0.1. Start with `await emu.start()`; `emu.base_url` is the REST base."""

    def __init__(self, *, token: str = "emulator-token", shards: int = 1) -> None:
        self.snowflake = Snowflakes()
        self.token = token
        # GET /gateway/bot's recommendation; also the count `add_guild(shard=...)` places by
        if shards < 1:
            raise ValueError("shards must be at least 1")
        self.shards = shards
        self.max_guilds_per_shard = 2500  # more in one session: 4011, sharding required
        self._guild_ms = 0  # the last guild id's timestamp: each guild gets its own
        self.bot_user = User(self.snowflake(), "LLMOS", bot=True)
        self.application_id = self.bot_user.id
        self.users: dict[int, User] = {self.bot_user.id: self.bot_user}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild id (None: global)
        self.interactions: dict[int, Interaction] = {}
        # An interaction's token works this long (Discord: 15 minutes); tests shorten it.
        self.token_lifetime_s = 15 * 60.0
        self.errors: list[str] = []  # unknown routes and refused requests: bugs to report
        self.faults: list[Fault] = []
        self.files: dict[int, bytes] = {}  # attachment id -> content
        # called with ("create" | "edit" | "delete", message) for every change to a message
        self.listeners: list[Callable[[str, Message], None]] = []
        self.requests: list[tuple[str, str]] = []
        self._changed = asyncio.Condition()
        self.sessions: dict[str, Session] = {}  # by session id, live or waiting for a RESUME
        self.identified = asyncio.Event()
        self.resumes = 0  # successful RESUMEs after a dropped connection
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifetime --------------------------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        app.router.add_get("/files/{file_id}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            if session.ws is not None:
                await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def redirect_discord(self) -> None:
        """Point this process's discord.py at the emulator (class attributes, see the notes)."""
        import discord.gateway
        import discord.http
        import yarl

        discord.http.Route.BASE = self.base_url
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)

    @contextlib.contextmanager
    def redirected(self) -> Iterator[None]:
        """`redirect_discord` for a while, then back to wherever discord.py pointed before
        (so a second emulator in a test can come and go)."""
        import discord.gateway
        import discord.http

        before = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        self.redirect_discord()
        try:
            yield
        finally:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = before

    # -- building the world ----------------------------------------------------------------------

    def add_guild(self, name: str = "Writers' Room", *, shard: int | None = None) -> Guild:
        """A guild with its owner and the bot as members. Each guild's id has a timestamp of
        its own (the part a shard is taken from), so that guilds spread over shards as on
        Discord: on shard `shard` of `self.shards`, or, without one, on the shards in turn."""
        if shard is None:
            shard = len(self.guilds) % self.shards
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} is not one of the {self.shards} shard(s)")
        owner = self.add_user("owner")
        ms = max(self.snowflake.now_ms(), self._guild_ms + 1)
        ms += (shard - ms) % self.shards
        self._guild_ms = ms
        guild = Guild(self.snowflake.at(ms), name, owner.id)
        guild.roles[guild.id] = Role(guild.id, "@everyone", MEMBER_PERMS)
        guild.members[owner.id] = Member(owner)
        guild.members[self.bot_user.id] = Member(self.bot_user)
        self.guilds[guild.id] = guild
        return guild

    def add_user(self, name: str) -> User:
        user = User(self.snowflake(), name)
        self.users[user.id] = user
        return user

    def add_member(self, guild: Guild, name: str, *, permissions: int = 0) -> User:
        user = self.add_user(name)
        roles = []
        if permissions:
            role = Role(self.snowflake(), f"{name}-role", permissions)
            guild.roles[role.id] = role
            roles.append(role.id)
        guild.members[user.id] = Member(user, roles)
        return user

    def add_channel(self, guild: Guild, name: str) -> Channel:
        channel = Channel(self.snowflake(), name, guild.id)
        guild.channels[channel.id] = channel
        self.channels[channel.id] = channel
        return channel

    async def open_channel(self, guild: Guild, name: str) -> Channel:
        """A new text channel while the bot is connected (it hears CHANNEL_CREATE)."""
        channel = self.add_channel(guild, name)
        await self.dispatch("CHANNEL_CREATE", channel.payload())
        await self._notify()
        return channel

    # -- waiting for the bot ---------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait until `predicate()` is truthy; returns its value.

        Re-checked on every change the bot makes, and every 0.1 s for conditions that depend on
        something else (the bot's database, say).
        """

        async def waiter() -> Any:
            async with self._changed:
                while not (value := predicate()):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.1)
                return value

        return await asyncio.wait_for(waiter(), timeout)

    def _tell(self, change: str, message: Message) -> None:
        for listener in self.listeners:
            listener(change, message)

    def channel_messages(self, channel_id: int) -> list[Message]:
        return [m for m in self.messages.values() if m.channel_id == channel_id and not m.deleted]

    # -- gateway ---------------------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send `event` in every session whose shard carries its guild (see the module's
        docstring); a session between a drop and its RESUME gets it on the RESUME."""
        guild_id = _guild_of(event, data)
        for session in list(self.sessions.values()):
            if session.carries(guild_id):
                await self._send(session, session.frame(event, data))

    @staticmethod
    async def _send(session: Session, frame: dict[str, Any]) -> None:
        if session.live:
            assert session.ws is not None
            with contextlib.suppress(ConnectionError, RuntimeError):
                await session.ws.send_str(json.dumps(frame))

    def session_of(self, shard_id: int) -> Session | None:
        """The live session of shard `shard_id` (of any count), if there is one."""
        return next((s for s in self.sessions.values() if s.live and s.shard[0] == shard_id), None)

    def forget_sent(self) -> None:
        """Drop the frames kept for RESUME (a long run that never resumes keeps no history)."""
        for session in self.sessions.values():
            session.sent.clear()

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            op = frame.get("op")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:
                if not await self._identify(ws, frame["d"]):
                    break
            elif op == 6:
                if not await self._resume(ws, frame["d"]):
                    break
            elif op in (3, 4, 8):  # presence, voice, member requests: accepted, not modelled
                continue
        for session in self.sessions.values():
            if session.ws is ws:
                session.ws = None  # resumable, until an IDENTIFY of its shard replaces it
        await self._notify()
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> bool:
        """Open a session for `ws` and send READY; False (and the socket closed, with
        Discord's code) when refused."""
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return False
        raw = data.get("shard") or [0, 1]
        try:
            shard_id, count = int(raw[0]), int(raw[1])
        except (TypeError, ValueError, IndexError):
            shard_id, count = -1, 0
        if not (count >= 1 and 0 <= shard_id < count):
            await ws.close(code=4010, message=b"Invalid shard.")
            return False
        if any(s.live and s.shard == (shard_id, count) for s in self.sessions.values()):
            await ws.close(code=4010, message=b"Invalid shard: it has a live session.")
            return False
        guilds = [g for g in self.guilds.values() if shard_of(g.id, count) == shard_id]
        if len(guilds) > self.max_guilds_per_shard:
            await ws.close(code=4011, message=b"Sharding required.")
            return False
        # a new session of this shard ends its old one (which can no longer RESUME)
        for old in [s for s in self.sessions.values() if s.shard == (shard_id, count)]:
            del self.sessions[old.id]
        session = Session(secrets.token_hex(8), (shard_id, count), ws)
        self.sessions[session.id] = session
        await self._send_ready(session, guilds)
        self.identified.set()
        await self._notify()
        return True

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> bool:
        session = self.sessions.get(str(data.get("session_id")))
        if data.get("token") != self.token or session is None:
            await ws.close(code=4009, message=b"Session timed out")
            return False
        self.resumes += 1
        last = data.get("seq") or 0
        session.ws = ws
        for missed in [f for f in session.sent if f["s"] > last]:
            await ws.send_str(json.dumps(missed))
        await self._send(session, session.frame("RESUMED", {}))
        await self._notify()
        return True

    async def _send_ready(self, session: Session, guilds: list[Guild]) -> None:
        ready = {
            "v": 10,
            "user": self.bot_user.payload(),
            "session_id": session.id,
            "resume_gateway_url": self.gateway_url,
            "private_channels": [],
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "application": {"id": str(self.application_id), "flags": 1 << 19},
            "shard": list(session.shard),
        }
        await self._send(session, session.frame("READY", ready))
        for guild in guilds:
            await self._send(session, session.frame("GUILD_CREATE", guild.payload()))

    async def drop_gateway(self, shard: int | None = None) -> None:
        """Close the bot's gateway sockets (of shard `shard` only, if given) as a network
        failure would (the bot should resume)."""
        for session in list(self.sessions.values()):
            if session.ws is not None and shard in (None, session.shard[0]):
                ws, session.ws = session.ws, None
                await ws.close(code=4000, message=b"emulated drop")

    # -- faults --------------------------------------------------------------------------------

    def inject_fault(
        self,
        method: str,
        path_prefix: str,
        *,
        status: int = 0,
        delay: float = 0.0,
        times: int = 1,
        retry_after: float = 0.2,
    ) -> Fault:
        """Make the next `times` matching requests fail with `status` and/or wait `delay` s.

        `path_prefix` matches the start of the path under /api/v10 (`"/webhooks/"`, say).
        """
        fault = Fault(method, path_prefix, status, delay, times, retry_after)
        self.faults.append(fault)
        return fault

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and path.startswith(fault.path_prefix):
                fault.times -= 1
                fault.hits += 1
                return fault
        return None

    # -- REST ------------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        self.requests.append((request.method, path))
        if request.headers.get("Authorization") != f"Bot {self.token}" and not (
            path.startswith(("/webhooks/", "/interactions/"))
        ):
            return _json({"code": 0, "message": "401: Unauthorized"}, 401)
        fault = self._take_fault(request.method, path)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status:
                headers = {"Content-Type": "application/json"}
                body: dict[str, Any] = {"code": 0, "message": f"emulated {fault.status}"}
                if fault.status == 429:
                    body |= {"retry_after": fault.retry_after, "global": False}
                    # Discord's 429s come through its proxy (`Via`); without it discord.py
                    # takes the 429 for a Cloudflare ban and does not retry.
                    headers |= {
                        "Retry-After": str(fault.retry_after),
                        "Via": "1.1 google",
                        "X-RateLimit-Scope": "user",
                    }
                return web.Response(
                    body=json.dumps(body).encode(), status=fault.status, headers=headers
                )
        handler, params = self._route(request.method, path)
        if handler is None:
            self.errors.append(f"unknown route {request.method} {path}")
            return _json(
                {"code": 0, "message": f"emulator: unknown route {request.method} {path}"}, 404
            )
        try:
            payload = await self._body(request)
            result = await handler(payload, request, *params)
        except DiscordError as err:
            self.errors.append(f"{request.method} {path}: {err.status} {err.message}")
            return _json({"code": err.code, "message": err.message}, err.status)
        await self._notify()
        if result is None:
            return web.Response(status=204)
        return _json(result)

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return await request.json()
        if request.content_type.startswith("multipart/"):
            body: dict[str, Any] = {}
            files = []
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if part.name == "payload_json":  # type: ignore[union-attr]
                    body.update(json.loads(await part.text()))  # type: ignore[union-attr]
                else:
                    data = await part.read()  # type: ignore[union-attr]
                    files.append({"filename": part.filename, "data": bytes(data)})  # type: ignore[union-attr]
            body["_files"] = files
            return body
        return {}

    def _route(self, method: str, path: str) -> tuple[Any, tuple[str, ...]]:
        parts = path.strip("/").split("/")
        for (m, pattern), handler in self._routes().items():
            pat = pattern.strip("/").split("/")
            if m != method or len(pat) != len(parts):
                continue
            params: list[str] = []
            for want, got in zip(pat, parts, strict=True):
                if want == "*":
                    params.append(got)
                elif want != got:
                    break
            else:
                return handler, tuple(params)
        return None, ()

    def _routes(self) -> dict[tuple[str, str], Any]:
        return {
            ("GET", "/gateway/bot"): self._get_gateway_bot,
            ("GET", "/gateway"): self._get_gateway,
            ("GET", "/users/@me"): self._get_me,
            ("GET", "/users/*"): self._get_user,
            ("GET", "/oauth2/applications/@me"): self._get_application,
            ("PUT", "/applications/*/commands"): self._put_commands,
            ("PUT", "/applications/*/guilds/*/commands"): self._put_guild_commands,
            ("GET", "/applications/*/commands"): self._get_commands,
            ("POST", "/interactions/*/*/callback"): self._callback,
            ("GET", "/webhooks/*/*/messages/@original"): self._get_original,
            ("PATCH", "/webhooks/*/*/messages/@original"): self._edit_original,
            ("DELETE", "/webhooks/*/*/messages/@original"): self._delete_original,
            ("POST", "/webhooks/*/*"): self._followup,
            ("PATCH", "/webhooks/*/*/messages/*"): self._edit_followup,
            ("DELETE", "/webhooks/*/*/messages/*"): self._delete_followup,
            ("POST", "/channels/*/messages"): self._create_message,
            ("GET", "/channels/*/messages/*"): self._get_message,
            ("PATCH", "/channels/*/messages/*"): self._edit_message,
            ("DELETE", "/channels/*/messages/*"): self._delete_message,
            ("POST", "/channels/*/typing"): self._typing,
            ("POST", "/channels/*/threads"): self._create_thread,
            ("PUT", "/channels/*/messages/*/reactions/*/@me"): self._add_own_reaction,
            ("DELETE", "/channels/*/messages/*/reactions/*/@me"): self._remove_own_reaction,
        }

    # -- REST handlers ---------------------------------------------------------------------------

    async def _get_gateway_bot(self, body: Any, request: web.Request) -> dict[str, Any]:
        """Where to connect and how many shards Discord recommends (`self.shards`)."""
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return {"url": self.gateway_url, "shards": self.shards, "session_start_limit": limit}

    async def _get_gateway(self, body: Any, request: web.Request) -> dict[str, Any]:
        return {"url": self.gateway_url}

    async def _get_me(self, body: dict[str, Any], request: web.Request) -> dict[str, Any]:
        return self.bot_user.payload()

    async def _get_user(self, body: Any, request: web.Request, user_id: str) -> dict[str, Any]:
        user = self.users.get(int(user_id)) if user_id.isdigit() else None
        if user is None:
            raise DiscordError(404, 10013, "Unknown User")
        return user.payload()

    async def _get_application(self, body: dict[str, Any], request: web.Request) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": "LLMOS",
            "icon": None,
            "description": "",
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.users[next(iter(self.guilds.values())).owner_id].payload()
            if self.guilds
            else self.bot_user.payload(),
            "verify_key": "0" * 64,
            "flags": 1 << 19,
            "team": None,
            "summary": "",
            "rpc_origins": [],
            "interactions_endpoint_url": None,
        }

    def _register(self, guild_id: int | None, commands: list[dict[str, Any]]) -> list[Any]:
        stored = []
        for command in commands:
            command = dict(command)
            command.setdefault("type", 1)
            command.setdefault("description", "")  # context-menu commands have none
            command.setdefault("dm_permission", True)
            command.setdefault("default_member_permissions", None)
            command["id"] = str(self.snowflake())
            command["application_id"] = str(self.application_id)
            command["version"] = str(self.snowflake())
            if guild_id is not None:
                command["guild_id"] = str(guild_id)
            stored.append(command)
        self.commands[guild_id] = stored
        return stored

    async def _put_commands(self, body: Any, request: web.Request, app: str) -> list[Any]:
        return self._register(None, await request.json())

    async def _put_guild_commands(
        self, body: Any, request: web.Request, app: str, guild: str
    ) -> list[Any]:
        return self._register(int(guild), await request.json())

    async def _get_commands(self, body: Any, request: web.Request, app: str) -> list[Any]:
        return self.commands.get(None, [])

    def _check_limits(self, body: dict[str, Any]) -> None:
        content = body.get("content") or ""
        if len(content) > CONTENT_LIMIT:
            raise DiscordError(400, 50035, f"content: must be {CONTENT_LIMIT} or fewer in length")
        embeds = body.get("embeds") or []
        if len(embeds) > EMBEDS_LIMIT:
            raise DiscordError(400, 50035, "embeds: must be 10 or fewer in length")
        total = 0
        for embed in embeds:
            for key, limit in EMBED_FIELD_LIMITS.items():
                if len(embed.get(key) or "") > limit:
                    raise DiscordError(400, 50035, f"embeds.{key}: must be {limit} or fewer")
            total += sum(len(embed.get(k) or "") for k in ("title", "description"))
            total += len((embed.get("footer") or {}).get("text", ""))
            total += sum(
                len(f.get("name", "")) + len(f.get("value", "")) for f in embed.get("fields", [])
            )
        if total > EMBED_TOTAL_LIMIT:
            raise DiscordError(400, 50035, "embeds: total size must be 6000 or fewer")

    def _new_message(
        self, channel_id: int, author: User, body: dict[str, Any], **extra: Any
    ) -> Message:
        self._check_limits(body)
        channel = self.channels.get(channel_id)
        if channel is None:
            raise DiscordError(404, 10003, "Unknown Channel")
        reference = (body.get("message_reference") or {}).get("message_id")
        message = Message(
            id=self.snowflake(),
            channel_id=channel_id,
            guild_id=channel.guild_id,
            author=author,
            content=body.get("content") or "",
            embeds=body.get("embeds") or [],
            components=body.get("components") or [],
            flags=body.get("flags") or 0,
            reference_id=int(reference) if reference else None,
            allowed_mentions=body.get("allowed_mentions"),
            attachments=self._attachments(body),
            **extra,
        )
        message.pinged = pings(message.content, message.allowed_mentions)
        message.mentions = [
            self.users[int(uid)]
            for uid in USER_MENTION.findall(message.content)
            if int(uid) in self.users
        ]
        self.messages[message.id] = message
        self._tell("create", message)
        return message

    async def _file(self, request: web.Request) -> web.Response:
        """The attachment host (Discord's CDN): an attachment's bytes by its id."""
        self.requests.append(("GET", request.path))
        data = self.files.get(int(request.match_info["file_id"]))
        if data is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=data, content_type="application/octet-stream")

    def attach(self, filename: str, data: bytes) -> dict[str, Any]:
        """A file on the attachment host, as Discord describes an attachment: its type is
        guessed from the name, as Discord does (the bytes may say otherwise)."""
        file_id = self.snowflake()
        self.files[file_id] = data
        kind = mimetypes.guess_type(filename)[0]
        return {
            "id": str(file_id),
            "filename": filename,
            "size": len(data),
            "url": f"{self.url}/files/{file_id}",
            "proxy_url": f"{self.url}/files/{file_id}",
        } | ({"content_type": kind} if kind else {})

    def _attachments(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.attach(file["filename"], file["data"]) for file in body.get("_files", [])]

    def _apply_edit(self, message: Message, body: dict[str, Any]) -> None:
        merged = {"content": message.content, "embeds": message.embeds} | {
            k: v for k, v in body.items() if k in ("content", "embeds")
        }
        self._check_limits(merged)
        message.history.append(message.snapshot())
        for key in ("content", "embeds", "components", "flags"):
            if key in body and body[key] is not None:
                setattr(message, key, body[key])
        if "content" in body and body["content"] is None:
            message.content = ""
        if "_files" in body:
            message.attachments = self._attachments(body)
        if "allowed_mentions" in body:
            message.allowed_mentions = body["allowed_mentions"]
        message.flags &= ~128  # an edit ends the "thinking" state
        message.pinged += pings(message.content, message.allowed_mentions)
        message.edited_at = time.time()
        message.edit_times.append(time.monotonic())
        self._tell("edit", message)

    async def _create_message(
        self, body: dict[str, Any], request: web.Request, channel: str
    ) -> dict[str, Any]:
        message = self._new_message(int(channel), self.bot_user, body)
        await self.dispatch("MESSAGE_CREATE", message.payload())
        return message.payload()

    def _message(self, message_id: str | int) -> Message:
        message = self.messages.get(int(message_id))
        if message is None or message.deleted:
            raise DiscordError(404, 10008, "Unknown Message")
        return message

    async def _get_message(
        self, body: Any, request: web.Request, channel: str, mid: str
    ) -> dict[str, Any]:
        return self._message(mid).payload()

    async def _edit_message(
        self, body: dict[str, Any], request: web.Request, channel: str, mid: str
    ) -> dict[str, Any]:
        message = self._message(mid)
        if message.author.id != self.bot_user.id:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        self._apply_edit(message, body)
        await self.dispatch("MESSAGE_UPDATE", message.payload())
        return message.payload()

    async def _delete_message(
        self, body: Any, request: web.Request, channel: str, mid: str
    ) -> None:
        message = self._message(mid)
        message.deleted = True
        self._tell("delete", message)
        await self.dispatch(
            "MESSAGE_DELETE", {"id": mid, "channel_id": channel, "guild_id": str(message.guild_id)}
        )

    async def _typing(self, body: Any, request: web.Request, channel: str) -> None:
        return None

    async def _create_thread(
        self, body: dict[str, Any], request: web.Request, channel: str
    ) -> dict[str, Any]:
        parent = self.channels.get(int(channel))
        if parent is None or parent.type != 0:
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        name = (body.get("name") or "").strip()
        if not 1 <= len(name) <= 100:
            raise DiscordError(400, 50035, "name: must be between 1 and 100 in length")
        thread = Channel(self.snowflake(), name, parent.guild_id, type=11, parent_id=parent.id)
        self.guilds[parent.guild_id].channels[thread.id] = thread
        self.channels[thread.id] = thread
        payload = thread.payload() | {"newly_created": True}
        await self.dispatch("THREAD_CREATE", payload)
        return thread.payload()

    async def _add_own_reaction(
        self, body: Any, request: web.Request, channel: str, mid: str, emoji: str
    ) -> None:
        await self.react(self.bot_user, self._message(mid), urllib.parse.unquote(emoji))

    async def _remove_own_reaction(
        self, body: Any, request: web.Request, channel: str, mid: str, emoji: str
    ) -> None:
        await self.unreact(self.bot_user, self._message(mid), urllib.parse.unquote(emoji))

    async def react(self, user: User, message: Message, emoji: str) -> None:
        """`user` adds the reaction `emoji` (a unicode emoji) to `message`."""
        users = message.reactions.setdefault(emoji, set())
        if user.id in users:
            return
        users.add(user.id)
        data = {
            "user_id": str(user.id),
            "channel_id": str(message.channel_id),
            "message_id": str(message.id),
            "emoji": {"id": None, "name": emoji},
            "type": 0,
            "burst": False,
            "message_author_id": str(message.author.id),
        }
        if message.guild_id is not None:
            data["guild_id"] = str(message.guild_id)
            data["member"] = self.guilds[message.guild_id].members[user.id].payload()
        await self.dispatch("MESSAGE_REACTION_ADD", data)
        await self._notify()

    async def unreact(self, user: User, message: Message, emoji: str) -> None:
        """`user` removes their reaction `emoji` from `message`."""
        users = message.reactions.get(emoji, set())
        if user.id not in users:
            return
        users.discard(user.id)
        data = {
            "user_id": str(user.id),
            "channel_id": str(message.channel_id),
            "message_id": str(message.id),
            "emoji": {"id": None, "name": emoji},
            "type": 0,
            "burst": False,
        }
        if message.guild_id is not None:
            data["guild_id"] = str(message.guild_id)
        await self.dispatch("MESSAGE_REACTION_REMOVE", data)
        await self._notify()

    # -- interactions ----------------------------------------------------------------------------

    def _interaction(self, token: str) -> Interaction:
        for interaction in self.interactions.values():
            if interaction.token == token:
                if time.monotonic() - interaction.created > self.token_lifetime_s:
                    raise DiscordError(401, 50027, "Invalid Webhook Token")
                return interaction
        raise DiscordError(404, 10015, "Unknown Webhook")

    async def _callback(
        self, body: dict[str, Any], request: web.Request, iid: str, token: str
    ) -> dict[str, Any]:
        interaction = self.interactions.get(int(iid))
        if interaction is None or interaction.token != token:
            raise DiscordError(404, 10062, "Unknown interaction")
        if interaction.callback_type is not None:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        if time.monotonic() - interaction.created > ACK_DEADLINE_S:
            raise DiscordError(404, 10062, "Unknown interaction (not acknowledged within 3 s)")
        kind = body["type"]
        data = body.get("data") or {}
        interaction.callback_type = kind
        interaction.ephemeral = bool((data.get("flags") or 0) & 64)
        result: dict[str, Any] = {
            "interaction": {
                "id": iid,
                "type": interaction.type,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": interaction.ephemeral,
            }
        }
        if kind in (4, 5):  # a message (4) or a "thinking" placeholder (5)
            fields = (
                dict(data) | {"_files": body.get("_files", [])}
                if kind == 4
                else {"flags": (data.get("flags") or 0) | 128}
            )
            message = self._new_message(
                interaction.channel_id,
                self.bot_user,
                fields,
                interaction_id=interaction.id,
                webhook_id=self.application_id,
            )
            interaction.original_id = message.id
            result["interaction"]["response_message_id"] = str(message.id)
            result["resource"] = {"type": kind, "message": message.payload()}
            await self.dispatch("MESSAGE_CREATE", message.payload())
        elif kind in (6, 7):  # deferred update / update of the component's message
            target = interaction.data.get("_message_id")
            if kind == 7 and target:
                self._apply_edit(self._message(target), data)
                await self.dispatch("MESSAGE_UPDATE", self._message(target).payload())
            result["resource"] = {"type": kind}
        elif kind == 9:  # a modal
            interaction.modal = data
            result["resource"] = {"type": kind}
        else:
            raise DiscordError(400, 50035, f"unsupported callback type {kind}")
        return result

    async def _get_original(
        self, body: Any, request: web.Request, app: str, token: str
    ) -> dict[str, Any]:
        interaction = self._interaction(token)
        if interaction.original_id is None:
            raise DiscordError(404, 10008, "Unknown Message")
        return self._message(interaction.original_id).payload()

    async def _edit_original(
        self, body: dict[str, Any], request: web.Request, app: str, token: str
    ) -> dict[str, Any]:
        interaction = self._interaction(token)
        if interaction.original_id is None:
            if interaction.callback_type not in (6, 7):
                raise DiscordError(404, 10008, "Unknown Message")
            interaction.original_id = int(interaction.data["_message_id"])
        message = self._message(interaction.original_id)
        self._apply_edit(message, body)
        await self.dispatch("MESSAGE_UPDATE", message.payload())
        return message.payload()

    async def _delete_original(self, body: Any, request: web.Request, app: str, token: str) -> None:
        interaction = self._interaction(token)
        if interaction.original_id is None:
            raise DiscordError(404, 10008, "Unknown Message")
        await self._delete_message(
            body, request, str(interaction.channel_id), str(interaction.original_id)
        )

    async def _followup(
        self, body: dict[str, Any], request: web.Request, app: str, token: str
    ) -> dict[str, Any]:
        interaction = self._interaction(token)
        if interaction.callback_type is None:
            raise DiscordError(400, 40060, "Interaction has not been acknowledged")
        message = self._new_message(
            interaction.channel_id,
            self.bot_user,
            body,
            interaction_id=interaction.id,
            webhook_id=self.application_id,
        )
        interaction.followup_ids.append(message.id)
        await self.dispatch("MESSAGE_CREATE", message.payload())
        return message.payload()

    async def _edit_followup(
        self, body: dict[str, Any], request: web.Request, app: str, token: str, mid: str
    ) -> dict[str, Any]:
        self._interaction(token)
        message = self._message(mid)
        self._apply_edit(message, body)
        await self.dispatch("MESSAGE_UPDATE", message.payload())
        return message.payload()

    async def _delete_followup(
        self, body: Any, request: web.Request, app: str, token: str, mid: str
    ) -> None:
        self._interaction(token)
        message = self._message(mid)
        await self._delete_message(body, request, str(message.channel_id), mid)
