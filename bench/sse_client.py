"""Raw-socket HTTP/1.1 clients for the streaming measurements of bench/run.

A load generator reports whole-request latency; streams need more: when the first event
arrives (TTFB), when each event arrives compared with when the upstream sent it (the mock's
`--stamp` comment lines), and what a thousand streams held open at once cost the proxy. These
clients send pre-built requests on plain sockets so their own overhead is small and the same
for every target; only the differences between targets are reported.
"""
import asyncio
import json
import re
import socket
import time

STAMP = re.compile(rb": mock-sent-us=(\d+)")


def request_bytes(base, path, body, key):
    """The whole request, built once: `base` is http://host:port."""
    host = base.split("//", 1)[1]
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\nContent-Length: {len(data)}\r\n\r\n")
    return head.encode() + data


def host_port(base):
    host, port = base.split("//", 1)[1].split(":")
    return host, int(port)


class HttpReader:
    """Incremental response parser: feed() returns the body bytes decoded so far
    (chunked or Content-Length); `done` once the response is complete."""

    def __init__(self):
        self.buf = b""
        self.status = None
        self.chunked = False
        self.length = None
        self.read = 0
        self.state = "size"
        self.left = 0
        self.done = False
        self.close = False

    def feed(self, data):
        self.buf += data
        if self.status is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return b""
            lines = self.buf[:end].decode("latin1").split("\r\n")
            self.buf = self.buf[end + 4:]
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == "transfer-encoding" and "chunked" in value:
                    self.chunked = True
                elif name == "content-length":
                    self.length = int(value)
                elif name == "connection" and value == "close":
                    self.close = True
            if not self.chunked and self.length is None:
                self.length = 0
        return self._chunked() if self.chunked else self._sized()

    def _sized(self):
        take = self.buf[: self.length - self.read]
        self.buf = self.buf[len(take):]
        self.read += len(take)
        self.done = self.read >= self.length
        return take

    def _chunked(self):
        out = []
        while not self.done:
            if self.state == "size":
                end = self.buf.find(b"\r\n")
                if end < 0:
                    break
                self.left = int(self.buf[:end].split(b";")[0], 16)
                self.buf = self.buf[end + 2:]
                self.state = "data" if self.left else "trailer"
            elif self.state == "data":
                if not self.buf:
                    break
                take = self.buf[: self.left]
                out.append(take)
                self.buf = self.buf[len(take):]
                self.left -= len(take)
                if not self.left:
                    self.state = "crlf"
            elif self.state == "crlf":
                if len(self.buf) < 2:
                    break
                self.buf = self.buf[2:]
                self.state = "size"
            else:  # trailer section: lines until an empty one
                end = self.buf.find(b"\r\n")
                if end < 0:
                    break
                self.buf = self.buf[end + 2:]
                self.done = end == 0
        return b"".join(out)


class Conn:
    """One kept-alive connection for sequential requests (reconnects when closed)."""

    def __init__(self, base):
        self.addr = host_port(base)
        self.sock = None

    def _connect(self):
        self.sock = socket.create_connection(self.addr, timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def stream(self, req, on_body=None, clock=time.perf_counter):
        """Sends `req`, reads the whole response. Returns (status, t_headers, t_first_body, t_end)
        relative to the send; `on_body(arrival, bytes)` sees each decoded piece with `clock()`."""
        for attempt in range(2):
            if self.sock is None:
                self._connect()
            t0 = clock()
            try:
                self.sock.sendall(req)
                r, t_head, t_body = HttpReader(), None, None
                while not r.done:
                    data = self.sock.recv(65536)
                    now = clock()
                    if not data:
                        raise ConnectionError("closed")
                    if t_head is None:
                        t_head = now - t0
                    body = r.feed(data)
                    if body:
                        if t_body is None:
                            t_body = now - t0
                        if on_body:
                            on_body(now, body)
                if r.close:
                    self.close()
                return r.status, t_head, t_body, clock() - t0
            except (ConnectionError, OSError):
                self.close()
                if attempt:
                    raise
        raise ConnectionError("unreachable")

    def close(self):
        if self.sock:
            self.sock.close()
        self.sock = None


def pick(xs, q):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3) if xs else None


def ttfb(targets, n, path, body_for):
    """Sequential streams, interleaved across `targets` (name -> (base, key, every)) so drift
    hits all alike: `every` = measure this target on every k-th round only (slow targets).
    Returns name -> {n, p50/p99 of time to first body byte and to headers, errors}."""
    conns = {name: Conn(base) for name, (base, _key, _every) in targets.items()}
    reqs = {name: request_bytes(base, path, body_for(name), key) for name, (base, key, _) in targets.items()}
    firsts = {name: [] for name in targets}
    heads = {name: [] for name in targets}
    errors = {name: 0 for name in targets}
    for i in range(n):
        for name, (_base, _key, every) in targets.items():
            if i % every:
                continue
            try:
                status, t_head, t_body, _ = conns[name].stream(reqs[name])
            except OSError:
                errors[name] += 1
                continue
            if status != 200 or t_body is None:
                errors[name] += 1
                continue
            firsts[name].append(t_body * 1000)
            heads[name].append(t_head * 1000)
    for c in conns.values():
        c.close()
    return {name: {"n": len(firsts[name]), "errors": errors[name], "p50_ms": pick(firsts[name], 0.5),
                   "p99_ms": pick(firsts[name], 0.99), "mean_ms": round(sum(firsts[name]) / len(firsts[name]), 3)
                   if firsts[name] else None, "headers_p50_ms": pick(heads[name], 0.5),
                   "headers_p99_ms": pick(heads[name], 0.99)} for name in targets}


def chunk_timing(base, key, path, body, streams):
    """Streams from a `--stamp` mock: for every event, arrival (wall clock) minus the mock's
    send stamp, and whether it arrived before the upstream sent the next one."""
    conn = Conn(base)
    req = request_bytes(base, path, body, key)
    late_ms, violations, events, bad = [], 0, 0, 0
    for _ in range(streams):
        pending, seen = [b""], []

        def on_body(now, piece):
            pending[0] += piece
            while b"\n\n" in pending[0]:
                block, pending[0] = pending[0].split(b"\n\n", 1)
                m = STAMP.search(block)
                if m:
                    seen.append((int(m.group(1)) / 1e6, now))

        status, _, _, _ = conn.stream(req, on_body, clock=time.time)
        if status != 200 or not seen:
            bad += 1
            continue
        events += len(seen)
        for k, (sent, arrived) in enumerate(seen):
            late_ms.append((arrived - sent) * 1000)
            if k + 1 < len(seen) and arrived > seen[k + 1][0]:
                violations += 1
    conn.close()
    return {"streams": streams, "failed": bad, "events": events, "late_p50_ms": pick(late_ms, 0.5),
            "late_p99_ms": pick(late_ms, 0.99), "late_max_ms": round(max(late_ms), 3) if late_ms else None,
            "arrived_after_next_was_sent": violations,
            # A scheduling hiccup on a loaded machine may delay one event; buffering or Nagle delays many.
            "passed": bad == 0 and events > 0 and violations <= events * 0.02}


def hold_streams(base, key, path, body, n, sample, timeout):
    """Opens `n` streams at once against a slow upstream and keeps them reading; `sample()`
    (the proxy's RSS in KiB) is polled while they are open. Returns the peak with all open."""
    return asyncio.run(_hold(base, key, path, body, n, sample, timeout))


async def _hold(base, key, path, body, n, sample, timeout):
    host, port = host_port(base)
    req = request_bytes(base, path, body, key)
    state = {"open": 0, "max_open": 0, "ok": 0, "failed": 0, "closed": 0}
    before = sample()

    async def one():
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            state["failed"] += 1
            return
        try:
            writer.write(req)
            await writer.drain()
            r, opened = HttpReader(), False
            while not r.done:
                data = await reader.read(65536)
                if not data:
                    break
                if r.feed(data) and not opened:
                    opened = True
                    state["open"] += 1
                    state["max_open"] = max(state["max_open"], state["open"])
            if opened:
                state["open"] -= 1
            state["ok" if r.done and r.status == 200 else "failed"] += 1
        except OSError:
            state["failed"] += 1
        finally:
            state["closed"] += 1
            writer.close()

    async def watch(tasks):
        peak, at_all_open, t_all_open = before, None, None
        started = time.time()
        while not all(t.done() for t in tasks):
            rss = sample()
            if state["closed"] == 0:
                peak = max(peak, rss)
            if at_all_open is None and state["open"] >= n:
                at_all_open, t_all_open = rss, round(time.time() - started, 2)
            await asyncio.sleep(0.05)
        return peak, at_all_open, t_all_open

    tasks = []
    for i in range(n):
        tasks.append(asyncio.ensure_future(one()))
        if i % 50 == 49:
            await asyncio.sleep(0.01)  # don't overflow the listen backlog
    try:
        peak, at_all_open, t_all_open = await asyncio.wait_for(watch(tasks), timeout)
    except asyncio.TimeoutError:
        for t in tasks:
            t.cancel()
        peak, at_all_open, t_all_open = None, None, None
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"streams": n, "max_open": state["max_open"], "ok": state["ok"], "failed": state["failed"],
            "rss_before_kib": before, "rss_all_open_kib": at_all_open, "rss_peak_kib": peak,
            "seconds_to_all_open": t_all_open,
            "kib_per_stream": round((peak - before) / state["max_open"], 1) if peak and state["max_open"] else None}


def hold_websockets(base, key, path, n, sample, settle_s=2.0):
    """Opens `n` Responses WebSockets (hand-made upgrade handshake, as Codex sends it) and keeps
    them idle; `sample()` (the server's RSS in KiB) is read before and once all are open and the
    server has settled. Returns KiB per idle socket."""
    return asyncio.run(_hold_ws(base, key, path, n, sample, settle_s))


async def _hold_ws(base, key, path, n, sample, settle_s):
    host, port = host_port(base)
    req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           f"OpenAI-Beta: responses_websockets=2026-02-06\r\nsession_id: bench\r\n"
           f"Authorization: Bearer {key}\r\n\r\n").encode()
    state = {"open": 0, "failed": 0, "first_error": None}
    conns = []

    async def steady():
        """RSS once two readings a while apart agree (the allocator returns freed pages lazily)."""
        last = sample()
        for _ in range(20):
            await asyncio.sleep(settle_s / 4)
            now = sample()
            if abs(now - last) < 256:
                return now
            last = now
        return last

    before = await steady()

    async def one():
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(req)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            state["failed"] += 1
            state["first_error"] = state["first_error"] or repr(e)[:200]
            return
        conns.append((reader, writer))
        if head.startswith(b"HTTP/1.1 101"):
            state["open"] += 1
        else:
            state["failed"] += 1
            state["first_error"] = state["first_error"] or head[:200].decode("latin1")

    started = time.time()
    tasks = []
    for i in range(n):
        tasks.append(asyncio.ensure_future(one()))
        if i % 50 == 49:
            await asyncio.sleep(0.01)
    await asyncio.gather(*tasks, return_exceptions=True)
    t_open = round(time.time() - started, 2)
    after = await steady()  # upgrade tasks spawned and parked
    # Still open: the server has not closed the socket (no EOF seen by the client's transport).
    still_open = sum(1 for reader, _w in conns if not reader.at_eof())
    for _r, w in conns:
        w.close()
    return {"sockets": n, "open": state["open"], "still_open_at_sample": still_open, "failed": state["failed"],
            "first_error": state["first_error"],
            "seconds_to_all_open": t_open, "rss_before_kib": before, "rss_all_open_kib": after,
            "kib_per_socket": round((after - before) / state["open"], 1) if state["open"] else None}
