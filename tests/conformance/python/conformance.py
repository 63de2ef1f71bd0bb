"""Protocol conformance of the hub with unmodified centrifuge-python (client) and cent (server API).

Environment (run.sh sets it):
  GPUSCOUT_URL        http://127.0.0.1:PORT of a running hub
  GPUSCOUT_PORT       its port
  GPUSCOUT_API_KEY    its server API key
  TOKEN_PRO, TOKEN_PRO_USER    a professional-tier connection token and its user id
  TOKEN_FREE, TOKEN_FREE_USER  a free-tier connection token and its user id

The client reaches the hub through a small TCP relay in this process, so a check can drop the
connection like a network failure (no close frame) and keep the client from reconnecting until
the missed publications are in the hub's history.

Run: python conformance.py. Prints one line per check and "N passed, N failed"; exits 1 on any
failure. Bounded: every wait has a timeout, each check 20 s, the whole run 60 s.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import traceback
from typing import Any, Awaitable, Callable, List, Optional

from cent import AsyncClient as CentClient
from cent import PublishRequest
from cent.exceptions import CentApiResponseError, CentUnauthorizedError
from checks import CheckFailed, check, env, run_capped, until
from centrifuge import (
    Client,
    ClientEventHandler,
    ClientState,
    ConnectedContext,
    ConnectingContext,
    DisconnectedContext,
    PublicationContext,
    ServerPublicationContext,
    ServerSubscribedContext,
    SubscribedContext,
    SubscriptionEventHandler,
    SubscriptionState,
    UnsubscribedContext,
)

OVERALL_CAP_S = 60
CHECK_CAP_S = 20
GPU_CHANNEL = "gpu:rtx-4090"
# run.sh starts the hub with this ping interval (GPUSCOUT__SERVER__PING_INTERVAL_S).
PING_S = int(os.environ.get("GPUSCOUT_PING_S", "25"))


HTTP_URL = env("GPUSCOUT_URL").rstrip("/")
PORT = int(env("GPUSCOUT_PORT"))
API_KEY = env("GPUSCOUT_API_KEY")
TOKEN_PRO = env("TOKEN_PRO")
PRO_USER = env("TOKEN_PRO_USER")
TOKEN_FREE = env("TOKEN_FREE")
FREE_USER = env("TOKEN_FREE_USER")
RUN = f"{os.getpid()}-{int(time.time() * 1000)}"


class Skipped(Exception):
    pass


def check_eq(got: Any, want: Any, message: str) -> None:
    if got != want:
        raise CheckFailed(f"{message}: got {got!r}, want {want!r}")


class WsTextLines:
    """Reads one direction of a relayed WebSocket connection (the HTTP head, then RFC 6455 frames)
    and calls `on_line` with every line of every unfragmented, uncompressed text frame."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self.on_line = on_line
        self.buf = b""
        self.head_done = False

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.buf = self.buf[end + 4 :]
            self.head_done = True
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            length, off = b1 & 0x7F, 2
            if length == 126:
                if len(self.buf) < 4:
                    return
                length, off = int.from_bytes(self.buf[2:4], "big"), 4
            elif length == 127:
                if len(self.buf) < 10:
                    return
                length, off = int.from_bytes(self.buf[2:10], "big"), 10
            mask = None
            if b1 & 0x80:
                if len(self.buf) < off + 4:
                    return
                mask, off = self.buf[off : off + 4], off + 4
            if len(self.buf) < off + length:
                return
            payload = self.buf[off : off + length]
            self.buf = self.buf[off + length :]
            if mask:
                payload = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
            fin, rsv1 = bool(b0 & 0x80), bool(b0 & 0x40)
            if b0 & 0x0F == 1 and fin and not rsv1:
                for line in payload.decode("utf-8", "replace").split("\n"):
                    self.on_line(line)


class Relay:
    """A TCP relay to the hub that can drop every connection and refuse new ones while down. It
    also counts the `{}` lines in text frames: pings from the hub, pongs from the client."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.down = False
        self.accepted = 0
        self.pings = 0
        self.pongs = 0
        self.writers: set = set()
        self.tasks: set = set()
        self.server: Optional[asyncio.base_events.Server] = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self.tasks.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self.writers.add(pair)

        def count_pong(line: str) -> None:
            if line == "{}":
                self.pongs += 1

        def count_ping(line: str) -> None:
            if line == "{}":
                self.pings += 1

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, lines: WsTextLines) -> None:
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    lines.feed(data)
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(
                pipe(reader, up_writer, WsTextLines(count_pong)),
                pipe(up_reader, writer, WsTextLines(count_ping)),
            )
        finally:
            self.writers.discard(pair)
            writer.transport.abort()
            up_writer.transport.abort()

    def drop(self) -> None:
        """Cut every relayed connection (both TCP sides, no WebSocket close) and refuse new ones."""
        self.down = True
        for client_writer, up_writer in list(self.writers):
            client_writer.transport.abort()
            up_writer.transport.abort()
        self.writers.clear()

    def restore(self) -> None:
        self.down = False

    async def close(self) -> None:
        self.drop()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=2)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class ClientEvents(ClientEventHandler):
    def __init__(self) -> None:
        self.connected: List[ConnectedContext] = []
        self.connecting: List[ConnectingContext] = []
        self.disconnected: List[DisconnectedContext] = []
        self.server_subscribed: List[ServerSubscribedContext] = []
        self.server_pubs: List[ServerPublicationContext] = []
        self.errors: List[Any] = []

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.connected.append(ctx)

    async def on_connecting(self, ctx: ConnectingContext) -> None:
        self.connecting.append(ctx)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.disconnected.append(ctx)

    async def on_error(self, ctx) -> None:
        self.errors.append(ctx)

    async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:
        self.server_subscribed.append(ctx)

    async def on_publication(self, ctx: ServerPublicationContext) -> None:
        self.server_pubs.append(ctx)


class SubEvents(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.subscribed: List[SubscribedContext] = []
        self.unsubscribed: List[UnsubscribedContext] = []
        self.pubs: List[PublicationContext] = []
        self.errors: List[Any] = []

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.append(ctx)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.unsubscribed.append(ctx)

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.pubs.append(ctx)

    async def on_error(self, ctx) -> None:
        self.errors.append(ctx)


class Conformance:
    def __init__(self) -> None:
        self.relay = Relay(PORT)
        self.cent: Optional[CentClient] = None
        self.clients: List[Client] = []
        # Shared by the professional-tier checks, which run in order.
        self.pro: Optional[Client] = None
        self.pro_events = ClientEvents()
        self.gpu_events = SubEvents()
        self.gpu_sub = None
        self.published: List[Any] = []  # (seq, cent PublishResult)

    def new_client(self, token: str, events: ClientEventHandler, port: Optional[int] = None) -> Client:
        client = Client(
            f"ws://127.0.0.1:{port or self.relay.port}/connection/websocket",
            events=events,
            token=token,
            timeout=5.0,
            min_reconnect_delay=0.1,
            max_reconnect_delay=1.0,
            # Reconnect when no server ping came within ping + 1.5 s (default 10 s): see pings().
            max_server_ping_delay=1.5,
            proxy=None,  # straight to the relay, whatever the environment says
        )
        self.clients.append(client)
        return client

    async def publish(self, channel: str, data: Any):
        assert self.cent is not None
        result = await self.cent.publish(PublishRequest(channel=channel, data=data), timeout=5.0)
        check(isinstance(result.offset, int) and result.offset > 0, f"cent returns the offset: {result!r}")
        check(isinstance(result.epoch, str) and result.epoch, f"cent returns the epoch: {result!r}")
        return result

    async def setup(self) -> None:
        await self.relay.start()
        self.cent = CentClient(f"{HTTP_URL}/api", API_KEY, timeout=5.0)

    async def teardown(self) -> None:
        for client in self.clients:
            try:
                await asyncio.wait_for(client.disconnect(), 5)
            except Exception:  # noqa: BLE001 - best effort
                pass
        if self.cent is not None:
            await self.cent.close()
        await self.relay.close()

    # --- checks, in order -------------------------------------------------------------------

    async def connect_with_token(self) -> None:
        ev = self.pro_events
        self.pro = self.new_client(TOKEN_PRO, ev)
        await self.pro.connect()
        await until(lambda: len(ev.connected) == 1, "the connected event")
        check_eq(self.pro.state, ClientState.CONNECTED, "client state")
        check(isinstance(ev.connected[0].client, str) and ev.connected[0].client, "client id is set")
        await until(lambda: len(ev.server_subscribed) >= 2, "the server-side subscribed events")
        channels = sorted(s.channel for s in ev.server_subscribed)
        check_eq(channels, [f"advisor:#{PRO_USER}", f"alerts:#{PRO_USER}", f"portfolio:#{PRO_USER}"], "server-side subscriptions")
        for s in ev.server_subscribed:
            check(s.recoverable, f"{s.channel} is recoverable")
            check(not s.was_recovering, f"{s.channel} was not recovering on the first connect")

    async def subscribe_and_receive(self) -> None:
        check(self.pro is not None and self.pro.state == ClientState.CONNECTED, "connected client")
        ev = self.gpu_events
        self.gpu_sub = self.pro.new_subscription(GPU_CHANNEL, events=ev)
        await self.gpu_sub.subscribe()
        await until(lambda: len(ev.subscribed) == 1, f"the subscribed event of {GPU_CHANNEL}")
        check_eq(ev.unsubscribed, [], "no unsubscribe")
        check_eq(self.gpu_sub.state, SubscriptionState.SUBSCRIBED, "subscription state")
        first = ev.subscribed[0]
        check(first.recoverable, "the subscription is recoverable")
        check(first.positioned, "the subscription is positioned")
        check(not first.was_recovering and not first.recovered, "not recovering on the first subscribe")
        check(first.stream_position is not None and first.stream_position.epoch, "stream position")

        for seq in (1, 2, 3):
            result = await self.publish(GPU_CHANNEL, {"run": RUN, "seq": seq, "phase": "live"})
            self.published.append((seq, result))
        await until(lambda: len(ev.pubs) >= 3, "3 live publications")
        await asyncio.sleep(0.2)  # a duplicate would show up now
        check_eq(
            [p.pub.data for p in ev.pubs],
            [{"run": RUN, "seq": s, "phase": "live"} for s in (1, 2, 3)],
            "live publications",
        )
        check_eq(
            [p.pub.offset for p in ev.pubs],
            [r.offset for _, r in self.published],
            "publication offsets are the ones cent returned",
        )
        check_eq(self.published[0][1].epoch, first.stream_position.epoch, "cent epoch = subscription epoch")
        check_eq(self.published[0][1].offset, first.stream_position.offset + 1, "first offset after subscribing")

    async def drop_and_recover(self) -> None:
        check(self.gpu_sub is not None and self.gpu_sub.state == SubscriptionState.SUBSCRIBED, "subscribed")
        client, ev, sub_ev = self.pro, self.pro_events, self.gpu_events
        alerts = f"alerts:#{PRO_USER}"
        connects_before = len(ev.connected)
        connecting_before = len(ev.connecting)
        accepted_before = self.relay.accepted

        self.relay.drop()
        try:
            await until(lambda: client.state == ClientState.CONNECTING, "the client to notice the drop")
            await until(lambda: len(ev.connecting) == connecting_before + 1, "the connecting event")
            check_eq(ev.connecting[-1].code, 1, "connecting code (transport closed)")
            check_eq(ev.disconnected, [], "a transport drop reconnects, it does not disconnect")
            check_eq(self.gpu_sub.state, SubscriptionState.SUBSCRIBING, "the subscription waits to resubscribe")

            for seq in (4, 5, 6):
                result = await self.publish(GPU_CHANNEL, {"run": RUN, "seq": seq, "phase": "missed"})
                self.published.append((seq, result))
            missed_alert = await self.publish(alerts, {"run": RUN, "alert": "missed"})
            check_eq(len(sub_ev.pubs), 3, "nothing arrives while disconnected")
        finally:
            self.relay.restore()
        await until(lambda: len(ev.connected) == connects_before + 1, "the reconnect", 15)
        check(self.relay.accepted > accepted_before, "the client reconnected through the relay")
        await until(lambda: len(sub_ev.subscribed) == 2, f"the second subscribed event of {GPU_CHANNEL}")
        again = sub_ev.subscribed[1]
        check_eq(again.was_recovering, True, "subscribed ctx was_recovering")
        check_eq(again.recovered, True, "subscribed ctx recovered")
        check_eq(again.stream_position.epoch, self.published[0][1].epoch, "same epoch after recovery")
        check_eq(again.stream_position.offset, self.published[5][1].offset, "position = last missed")

        await until(lambda: len(sub_ev.pubs) >= 6, "the 3 recovered publications")
        result = await self.publish(GPU_CHANNEL, {"run": RUN, "seq": 7, "phase": "live"})
        self.published.append((7, result))
        await until(lambda: len(sub_ev.pubs) >= 7, "the live publication after recovery")
        await asyncio.sleep(0.3)  # a duplicate would show up now

        expected = (
            [{"run": RUN, "seq": s, "phase": "live"} for s in (1, 2, 3)]
            + [{"run": RUN, "seq": s, "phase": "missed"} for s in (4, 5, 6)]
            + [{"run": RUN, "seq": 7, "phase": "live"}]
        )
        check_eq([p.pub.data for p in sub_ev.pubs], expected, "every publication exactly once, in order")
        offsets = [p.pub.offset for p in sub_ev.pubs]
        check_eq(offsets, [r.offset for _, r in self.published], "offsets are the ones cent returned")
        check_eq(offsets, list(range(offsets[0], offsets[0] + 7)), "offsets are consecutive")

        # The server-side subscription to alerts:#<uid> is recovered through the connect command.
        await until(lambda: any(p.channel == alerts for p in ev.server_pubs), "the missed alert")
        got = [p for p in ev.server_pubs if p.channel == alerts]
        check_eq([p.pub.data for p in got], [{"run": RUN, "alert": "missed"}], "the missed alert exactly once")
        check_eq(got[0].pub.offset, missed_alert.offset, "alert offset")
        again_alerts = [s for s in ev.server_subscribed if s.channel == alerts]
        check_eq(len(again_alerts), 2, "alerts subscribed twice")
        check_eq(again_alerts[1].was_recovering, True, "alerts server-side sub was_recovering")
        check_eq(again_alerts[1].recovered, True, "alerts server-side sub recovered")

    async def pings(self) -> None:
        """centrifuge-python resets its ping timer only on a `{}` ping: without pings every interval
        it reconnects; without its pongs the hub closes with 3012. Either is a connecting event."""
        if PING_S > 5:
            raise Skipped(f"hub ping interval is {PING_S} s")
        client, ev, sub_ev = self.pro, self.pro_events, self.gpu_events
        check(client is not None and client.state == ClientState.CONNECTED, "connected client")
        connecting_before = len(ev.connecting)
        connects_before = len(ev.connected)
        client_id = client.client_id
        check_eq(len(self.relay.writers), 1, "one relayed connection (the professional client)")
        pings_before, pongs_before = self.relay.pings, self.relay.pongs
        await asyncio.sleep(PING_S * 3.5)
        pings = self.relay.pings - pings_before
        pongs = self.relay.pongs - pongs_before
        check(pings >= 3, f"the hub sent a ping every {PING_S} s: {pings} pings in {PING_S * 3.5} s")
        check(pings - 1 <= pongs <= pings, f"the client answered every ping: {pings} pings, {pongs} pongs")
        check_eq(ev.connecting[connecting_before:], [], "no reconnect while idle")
        check_eq(len(ev.connected), connects_before, "connect count")
        check_eq(client.state, ClientState.CONNECTED, "client state")
        check_eq(client.client_id, client_id, "same connection")
        check_eq(self.gpu_sub.state, SubscriptionState.SUBSCRIBED, "subscription state")
        count = len(sub_ev.pubs)
        result = await self.publish(GPU_CHANNEL, {"run": RUN, "seq": 8, "phase": "after-idle"})
        await until(lambda: len(sub_ev.pubs) == count + 1, "a publication after the idle period")
        check_eq(sub_ev.pubs[count].pub.data, {"run": RUN, "seq": 8, "phase": "after-idle"}, "data")
        check_eq(sub_ev.pubs[count].pub.offset, result.offset, "offset")

    async def free_tier(self) -> None:
        ev = ClientEvents()
        client = self.new_client(TOKEN_FREE, ev)
        forbidden_ev, allowed_ev, gpu_ev = SubEvents(), SubEvents(), SubEvents()
        forbidden = client.new_subscription("market:summary", events=forbidden_ev)
        allowed = client.new_subscription("market:summary.1m", events=allowed_ev)
        await client.connect()
        await until(lambda: len(ev.connected) == 1, "the free client to connect")
        await forbidden.subscribe()
        await allowed.subscribe()

        await until(lambda: len(forbidden_ev.unsubscribed) == 1, "market:summary to be refused")
        check_eq(forbidden_ev.unsubscribed[0].code, 103, "market:summary refused with")
        check_eq(forbidden.state, SubscriptionState.UNSUBSCRIBED, "market:summary state")
        check_eq(forbidden_ev.subscribed, [], "market:summary never subscribed")

        await until(lambda: len(allowed_ev.subscribed) == 1, "market:summary.1m to subscribe")
        check_eq(allowed.state, SubscriptionState.SUBSCRIBED, "market:summary.1m state")
        check_eq(allowed_ev.unsubscribed, [], "market:summary.1m not refused")
        result = await self.publish("market:summary.1m", {"run": RUN, "window": "1m"})
        await until(lambda: len(allowed_ev.pubs) == 1, "a market:summary.1m publication")
        check_eq(allowed_ev.pubs[0].pub.data, {"run": RUN, "window": "1m"}, "market:summary.1m data")
        check_eq(allowed_ev.pubs[0].pub.offset, result.offset, "market:summary.1m offset")

        gpu = client.new_subscription(GPU_CHANNEL, events=gpu_ev)
        await gpu.subscribe()
        await until(lambda: len(gpu_ev.unsubscribed) == 1, f"{GPU_CHANNEL} to be refused for free tier")
        check_eq(gpu_ev.unsubscribed[0].code, 103, f"{GPU_CHANNEL} refused with")
        check_eq(client.state, ClientState.CONNECTED, "refused subscriptions leave the connection up")
        check(FREE_USER, "free user id")

    async def cent_errors(self) -> None:
        assert self.cent is not None
        try:
            await self.cent.publish(PublishRequest(channel="nope:x", data={"run": RUN}), timeout=5.0)
        except CentApiResponseError as e:
            check_eq(e.code, 102, "unknown channel error code")
        else:
            raise CheckFailed("publishing to an unknown channel did not fail")
        wrong = CentClient(f"{HTTP_URL}/api", API_KEY + "-wrong", timeout=5.0)
        try:
            await wrong.publish(PublishRequest(channel=GPU_CHANNEL, data={"run": RUN}), timeout=5.0)
        except CentUnauthorizedError:
            pass
        else:
            raise CheckFailed("a wrong API key was accepted")
        finally:
            await wrong.close()


async def run_checks() -> int:
    c = Conformance()
    checks: List[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("connect with a token; server-side subscriptions in the connect reply", c.connect_with_token),
        (f"subscribe {GPU_CHANNEL} (professional) and receive publications made with cent", c.subscribe_and_receive),
        ("drop the connection; recovered, missed publications exactly once and in order", c.drop_and_recover),
        ("server pings answered: connection stays up, idle, across several ping intervals", c.pings),
        ("free tier: market:summary refused with 103, market:summary.1m works", c.free_tier),
        ("cent: unknown channel is error 102, wrong API key unauthorized", c.cent_errors),
    ]
    passed = failed = skipped = 0
    await c.setup()
    try:
        for name, fn in checks:
            started = time.monotonic()
            try:
                await asyncio.wait_for(fn(), CHECK_CAP_S)
            except Skipped as e:
                skipped += 1
                print(f"SKIP {name}: {e}", flush=True)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                failed += 1
                detail = "timed out" if isinstance(e, asyncio.TimeoutError) else f"{type(e).__name__}: {e}"
                print(f"FAIL {name}: {detail}", flush=True)
                if not isinstance(e, (CheckFailed, asyncio.TimeoutError)):
                    traceback.print_exc()
            else:
                passed += 1
                print(f"PASS {name} ({time.monotonic() - started:.2f} s)", flush=True)
    finally:
        await asyncio.wait_for(c.teardown(), 10)
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""), flush=True)
    return 1 if failed else 0


def main() -> int:
    return run_capped(run_checks, OVERALL_CAP_S)


if __name__ == "__main__":
    sys.exit(main())
