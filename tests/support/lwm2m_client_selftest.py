#!/usr/bin/env python3
"""Self-test of lwm2m_client.py against a minimal LwM2M server stand-in (aiocoap, plus raw
CoAP datagrams where the exact token matters): Register from the serving port, Read in TLV,
SenML JSON and plain text, Write-Replace and Write-Partial-Update, Execute, Observe with
notifications, Write-Attributes (pmax), cancel by Observe:1 and by Reset, Update (asked and
timed), De-register, a device that vanishes and reappears, TLV refused with 4.06, IPv6.

TLV bytes are checked against layouts worked out by hand from LwM2M TS Core §7.4.3, and
decoded by a small decoder of this file's own, not the client's.

Run: python3 tests/support/lwm2m_client_selftest.py  (exit status 0 when every check holds;
the last line says how many passed).
"""

import asyncio
import ipaddress
import json
import os
import random
import socket
import struct
import sys

try:
    import aiocoap
    from aiocoap import interfaces
    from aiocoap.numbers.codes import Code
except ImportError:
    sys.stderr.write(
        "selftest: aiocoap is missing: "
        "python3 -m pip install --break-system-packages aiocoap==0.4.14\n"
    )
    sys.exit(3)

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lwm2m_client.py")
TLV, SENML, TEXT, LINK = 11542, 110, 0, 40
# How long any one expected event or answer may take before the test fails.
BOUND = 15
# How long a vanished client is given to (wrongly) answer.
SILENCE = 3


def main():
    checks = Checks()
    try:
        asyncio.run(selftest(checks))
    except Failed as e:
        print(f"FAILED: {e}", flush=True)
        checks.failed = 1
    print(f"lwm2m_client selftest: {checks.passed} passed, {checks.failed} failed", flush=True)
    sys.exit(1 if checks.failed else 0)


class Failed(Exception):
    pass


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def __call__(self, cond, what):
        if not cond:
            raise Failed(what)
        self.passed += 1
        print(f"ok: {what}", flush=True)


async def selftest(check):
    server = Server()
    ctx = await aiocoap.Context.create_server_context(
        server, bind=("::", 0), transports=["udp6"]
    )
    (tokens,) = ctx.request_interfaces
    port = tokens.token_interface.message_interface.transport.get_extra_info(
        "socket"
    ).getsockname()[1]
    try:
        await ipv4_tlv_client(check, ctx, server, port)
        await ipv6_senml_client(check, ctx, server, port)
    finally:
        await ctx.shutdown()


async def ipv4_tlv_client(check, ctx, server, port):
    client = await ClientProcess.start(
        ["--server", f"coap://127.0.0.1:{port}", "--ep", "selftest-a", "--objects", "3,3303"]
    )
    try:
        ready = await client.wait("ready")
        reg = await server.next("register")
        check(reg["port"] == ready["port"], "Register comes from the serving port")
        check(
            reg["query"] == ["ep=selftest-a", "lt=60", "lwm2m=1.1", "b=U"],
            f"Register query {reg['query']}",
        )
        check(reg["cf"] == LINK, "Register payload is link format")
        check(
            reg["payload"] == '</>;rt="oma.lwm2m";ct="110 11542",'
            "</3>;ver=1.2,</3/0>,</3303>;ver=1.1,</3303/0>",
            f"Register payload {reg['payload']}",
        )
        registered = await client.wait("registered")
        check(registered["location"] == reg["location"], "registered at the given location")
        dev = reg["uri"]

        r = await request(ctx, "GET", dev + "/3/0", accept=TLV)
        check(r.code == Code.CONTENT and r.opt.content_format == TLV, "Read /3/0 in TLV")
        res = tlv_resources(r.payload)
        check(res[0] == (3, b"Example Sensors"), "TLV /3/0/0 Manufacturer")
        check(res[9] == (3, b"\x57"), "TLV /3/0/9 Battery Level 87 in one byte")
        check(res[6] == (2, bytes.fromhex("410001410105")), "TLV /3/0/6 two instances 1, 5")
        check(4 not in res, "the executable /3/0/4 is not read")
        check((await client.wait("read")) == ev("read", path="/3/0", format="tlv"), "read event")

        r = await request(ctx, "GET", dev + "/3/0/15", accept=TLV)
        check(r.payload == bytes.fromhex("c80f0c") + b"Europe/Paris", "TLV /3/0/15 exactly")
        r = await request(ctx, "GET", dev + "/3303/0/5700", accept=TLV)
        check(r.payload == bytes.fromhex("e4164441ac0000"), "TLV /3303/0/5700 = 21.5 (float32)")
        r = await request(ctx, "GET", dev + "/3/0/6", accept=TLV)
        check(r.payload == bytes.fromhex("8606410001410105"), "TLV /3/0/6 exactly")
        r = await request(ctx, "GET", dev + "/3/0")
        check(r.opt.content_format == TLV, "a Read without Accept answers in TLV (--format tlv)")

        r = await request(ctx, "GET", dev + "/3/0", accept=SENML)
        check(r.code == Code.CONTENT and r.opt.content_format == SENML, "Read /3/0 in SenML")
        values = senml_values(r.payload)
        check(values["/3/0/0"] == ("vs", "Example Sensors"), "SenML /3/0/0")
        check(values["/3/0/6/0"] == ("v", 1) and values["/3/0/6/1"] == ("v", 5), "SenML /3/0/6")
        check(values["/3/0/16"] == ("vs", "U"), "SenML /3/0/16 binding U")
        check(isinstance(values["/3/0/13"][1], int), "SenML /3/0/13 time as a number")

        body = bytes.fromhex("c80f0d") + b"Europe/Berlin"
        r = await request(ctx, "PUT", dev + "/3/0/15", payload=body, cf=TLV)
        check(r.code == Code.CHANGED, "Write-Replace /3/0/15 in TLV: 2.04")
        write = await client.wait("write")
        check(write["values"] == {"/3/0/15": "Europe/Berlin"}, f"write event {write}")
        r = await request(ctx, "GET", dev + "/3/0/15", accept=SENML)
        check(senml_values(r.payload) == {"/3/0/15": ("vs", "Europe/Berlin")}, "written")

        r = await request(ctx, "PUT", dev + "/3/0/0", payload=b"\xc1\x00\x41", cf=TLV)
        check(r.code == Code.METHOD_NOT_ALLOWED, "writing the R-only /3/0/0: 4.05")
        r = await request(ctx, "PUT", dev + "/3/0/99", payload=b"\xc1\x63\x41", cf=TLV)
        check(r.code == Code.NOT_FOUND, "writing an unknown resource: 4.04")
        partial = [{"bn": "/3/0/", "n": "14", "vs": "+02:00"}, {"n": "13", "v": 1700000000}]
        r = await request(
            ctx, "POST", dev + "/3/0", payload=json.dumps(partial).encode(), cf=SENML
        )
        check(r.code == Code.CHANGED, "Write-Partial-Update /3/0 in SenML: 2.04")
        await client.wait("write")
        r = await request(ctx, "GET", dev + "/3/0/14", accept=TEXT)
        check(r.payload == b"+02:00", "partial update written, read as plain text")
        r = await request(ctx, "GET", dev + "/3/0/13", accept=TLV)
        check(r.payload == bytes.fromhex("c40d") + struct.pack(">i", 1700000000), "time in TLV")

        r = await request(ctx, "POST", dev + "/3/0/4")
        check(r.code == Code.CHANGED, "Execute /3/0/4: 2.04")
        check((await client.wait("execute")) == ev("execute", path="/3/0/4"), "execute event")
        r = await request(ctx, "POST", dev + "/3/0/15")
        check(r.code == Code.METHOD_NOT_ALLOWED, "Execute on a non-executable: 4.05")
        for missing in ("/3/0/99", "/9/0", "/3/1", "/3/0/6/7"):
            r = await request(ctx, "GET", dev + missing, accept=TLV)
            check(r.code == Code.NOT_FOUND, f"Read {missing}: 4.04")
        r = await request(ctx, "GET", dev + "/3/0", accept=LINK)
        check(b"</3/0/6>;dim=2" in r.payload, "Discover /3/0 lists the resources")

        # Observe with aiocoap; the cancel is a Reset to the next notification.
        obs = ctx.request(msg("GET", dev + "/3303/0/5700", accept=TLV, observe=0))
        first = await within(obs.response)
        check(first.opt.observe is not None, "Observe /3303/0/5700 accepted")
        check(tlv_float(first.payload) == 21.5, "first notification 21.5")
        await client.wait("observe")
        client.send({"cmd": "set", "path": "/3303/0/5700", "value": 23.0})
        note = await within(obs.observation.__aiter__().__anext__())
        check(tlv_float(note.payload) == 23.0, "notification after set: 23.0")
        check(
            (await client.wait("notified")) == ev("notified", path="/3303/0/5700", format="tlv"),
            "notified event",
        )
        r = await request(ctx, "PUT", dev + "/3303/0/5700?pmax=1")
        check(r.code == Code.CHANGED, "Write-Attributes pmax=1: 2.04")
        note = await within(obs.observation.__aiter__().__anext__())
        check(tlv_float(note.payload) == 23.0, "a notification at pmax without a change")
        obs.observation.cancel()
        cancel = await client.wait("cancel", timeout=BOUND)
        check(cancel["path"] == "/3303/0/5700", "the Reset to the next notification cancels")
        r = await request(ctx, "PUT", dev + "/3303/0/5700?pmax")
        check(r.code == Code.CHANGED, "pmax removed")

        # Observe on an instance in SenML with raw datagrams: Observe:1 on the same token
        # cancels.
        raw = RawCoap(reg["host"], reg["port"])
        try:
            token = b"\x5a\x17"
            answer = await raw.ask(
                "GET", "/3303/0", token, observe=0, accept=SENML
            )
            check(answer["code"] == Code.CONTENT and 6 in answer["options"], "raw Observe")
            await client.wait("observe")
            client.send({"cmd": "set", "path": "/3303/0/5700", "value": 24.5})
            note = await raw.notification(token)
            values = senml_values(note["payload"])
            check(values["/3303/0/5700"] == ("v", 24.5), "instance notification has 24.5")
            check(values["/3303/0/5602"] == ("v", 24.5), "and the new maximum")
            answer = await raw.ask("GET", "/3303/0", token, observe=1, accept=SENML)
            check(answer["code"] == Code.CONTENT, "Observe:1 answered with the content")
            check((await client.wait("cancel"))["path"] == "/3303/0", "Observe:1 cancels")

            # Registration Update and De-register come from the serving port.
            client.send({"cmd": "update"})
            update = await server.next("update")
            check(update["port"] == ready["port"], "Update from the serving port")
            check(update["path"] == reg["location"], "Update to the location")
            await client.wait("updated")
            client.send({"cmd": "deregister"})
            dereg = await server.next("deregister")
            check(dereg["port"] == ready["port"], "De-register from the serving port")
            await client.wait("deregistered")
            client.send({"cmd": "register"})
            await server.next("register")
            await client.wait("registered")

            # A vanished device answers nothing, not even an empty ACK.
            client.send({"cmd": "vanish"})
            await client.wait("vanished")
            check(
                await raw.silent("GET", "/3/0/0", b"\x01", SILENCE),
                f"a vanished client sends nothing for {SILENCE} s",
            )
            client.send({"cmd": "reappear"})
            await client.wait("reappeared")
            answer = await raw.ask("GET", "/3/0/0", b"\x02", accept=TEXT)
            check(answer["payload"] == b"Example Sensors", "it answers again after reappear")
        finally:
            raw.close()
        client.send({"cmd": "quit"})
        check(await client.exit_status() == 0, "quit exits 0")
    finally:
        client.kill()


async def ipv6_senml_client(check, ctx, server, port):
    client = await ClientProcess.start(
        [
            "--server",
            f"coap://[::1]:{port}",
            "--ep",
            "selftest-b",
            "--objects",
            "3303",
            "--refuse-tlv",
            "--lifetime",
            "2",
        ]
    )
    try:
        ready = await client.wait("ready")
        check(ready["address"] == "::1", "IPv6 server: the client serves on ::1")
        reg = await server.next("register")
        check(reg["port"] == ready["port"] and reg["host"] == "::1", "Register over IPv6")
        check(
            reg["payload"] == '</>;rt="oma.lwm2m";ct=110,</3303>;ver=1.1,</3303/0>',
            f"Register payload {reg['payload']}",
        )
        await client.wait("registered")
        dev = reg["uri"]
        r = await request(ctx, "GET", dev + "/3303/0", accept=TLV)
        check(r.code == Code.NOT_ACCEPTABLE, "--refuse-tlv: Accept TLV gets 4.06")
        r = await request(ctx, "GET", dev + "/3303/0", accept=SENML)
        check(r.code == Code.CONTENT, "then SenML JSON is answered")
        values = senml_values(r.payload)
        check(values["/3303/0/5701"] == ("vs", "Cel"), "SenML /3303/0/5701 Cel")
        r = await request(ctx, "GET", dev + "/3303/0")
        check(r.opt.content_format == SENML, "a Read without Accept answers in SenML")
        update = await server.next("update")
        check(update["port"] == ready["port"], "the Update comes by itself before lt runs out")
        await client.wait("updated")
        client.send({"cmd": "quit"})
        check(await client.exit_status() == 0, "quit exits 0")
    finally:
        client.kill()


# ---------------------------------------------------------------------------------------
# The LwM2M server stand-in: /rd only


class Server(interfaces.Resource):
    def __init__(self):
        super().__init__()
        self.events = asyncio.Queue()
        self.count = 0

    async def needs_blockwise_assembly(self, request):
        return True

    async def render_to_pipe(self, pipe):
        await interfaces.Resource._render_to_pipe(self, pipe)

    async def render(self, request):
        path = request.opt.uri_path
        host, port = sockaddr_host(request.remote.sockaddr), request.remote.sockaddr[1]
        seen = {"host": host, "port": port, "path": "/" + "/".join(path)}
        if path == ("rd",) and request.code == Code.POST:
            self.count += 1
            location = ("rd", f"r{self.count}")
            uri_host = f"[{host}]" if ":" in host else host
            await self.events.put(
                {
                    "kind": "register",
                    **seen,
                    "query": list(request.opt.uri_query),
                    "cf": request.opt.content_format,
                    "payload": request.payload.decode(),
                    "location": "/" + "/".join(location),
                    "uri": f"coap://{uri_host}:{port}",
                }
            )
            return aiocoap.Message(code=Code.CREATED, location_path=location)
        if len(path) == 2 and path[0] == "rd" and request.code == Code.POST:
            await self.events.put({"kind": "update", **seen})
            return aiocoap.Message(code=Code.CHANGED)
        if len(path) == 2 and path[0] == "rd" and request.code == Code.DELETE:
            await self.events.put({"kind": "deregister", **seen})
            return aiocoap.Message(code=Code.DELETED)
        return aiocoap.Message(code=Code.NOT_FOUND)

    async def next(self, kind):
        event = await within(self.events.get())
        if event["kind"] != kind:
            raise Failed(f"the server stand-in got {event}, not a {kind}")
        return event


def sockaddr_host(sockaddr):
    ip = ipaddress.ip_address(sockaddr[0])
    return str(ip.ipv4_mapped or ip)


def msg(method, uri, *, accept=None, observe=None, payload=b"", cf=None):
    m = aiocoap.Message(code=getattr(Code, method), uri=uri, payload=payload)
    if accept is not None:
        m.opt.accept = accept
    if observe is not None:
        m.opt.observe = observe
    if cf is not None:
        m.opt.content_format = cf
    return m


async def request(ctx, method, uri, **kw):
    return await within(ctx.request(msg(method, uri, **kw)).response)


async def within(awaitable, timeout=BOUND):
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise Failed(f"nothing within {timeout} s") from None


def ev(name, **fields):
    return {"ev": name, **fields}


# ---------------------------------------------------------------------------------------
# The client under test


class ClientProcess:
    def __init__(self, proc):
        self.proc = proc
        self.seen = []

    @classmethod
    async def start(cls, args):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            CLIENT,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def wait(self, name, timeout=BOUND):
        """The next event called `name`, skipping others."""
        while True:
            line = await within(self.proc.stdout.readline(), timeout)
            if not line:
                raise Failed(f"the client exited waiting for {name}; it said {self.seen}")
            event = json.loads(line)
            self.seen.append(event)
            if event["ev"] == "error":
                raise Failed(f"the client complained: {event}")
            if event["ev"] == name:
                return event

    def send(self, cmd):
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")

    async def exit_status(self):
        return await within(self.proc.wait())

    def kill(self):
        if self.proc.returncode is None:
            self.proc.kill()


# ---------------------------------------------------------------------------------------
# Raw CoAP (RFC 7252 §3) for exact tokens and for listening to silence

CON, NON, ACK, RST = 0, 1, 2, 3
METHODS = {"GET": 1, "POST": 2, "PUT": 3, "DELETE": 4}
OBSERVE, URI_PATH, CONTENT_FORMAT, ACCEPT = 6, 11, 12, 17


class RawCoap:
    def __init__(self, host, port):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect((host, port))
        self.mid = random.randrange(1 << 16)

    def close(self):
        self.sock.close()

    def send(self, mtype, code, token, options, payload=b""):
        self.mid = (self.mid + 1) & 0xFFFF
        self.sock.send(coap_encode(mtype, code, self.mid, token, options, payload))
        return self.mid

    async def receive(self, timeout=BOUND):
        loop = asyncio.get_running_loop()
        return coap_decode(await within(loop.sock_recv(self.sock, 2048), timeout))

    def request_options(self, path, observe, accept):
        options = []
        if observe is not None:
            options.append((OBSERVE, uint(observe)))
        options += [(URI_PATH, p.encode()) for p in path.strip("/").split("/")]
        if accept is not None:
            options.append((ACCEPT, uint(accept)))
        return options

    async def ask(self, method, path, token, observe=None, accept=None):
        """A CON request; its piggybacked answer."""
        mid = self.send(CON, METHODS[method], token, self.request_options(path, observe, accept))
        while True:
            m = await self.receive()
            if m["type"] == ACK and m["mid"] == mid:
                return m
            self.acknowledge(m)

    async def notification(self, token):
        """The next notification on `token` (acknowledged when confirmable)."""
        while True:
            m = await self.receive()
            self.acknowledge(m)
            if m["token"] == token and OBSERVE in m["options"]:
                return m

    def acknowledge(self, m):
        if m["type"] == CON:
            self.sock.send(coap_encode(ACK, 0, m["mid"], b"", []))

    async def silent(self, method, path, token, seconds):
        """Whether a CON request gets no datagram at all back within `seconds`."""
        self.send(CON, METHODS[method], token, self.request_options(path, None, None))
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_recv(self.sock, 2048), seconds)
        except asyncio.TimeoutError:
            return True
        return False


def uint(n):
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def coap_encode(mtype, code, mid, token, options, payload=b""):
    out = bytes([0x40 | mtype << 4 | len(token), code]) + struct.pack(">H", mid) + token
    last = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        delta, length = number - last, len(value)
        last = number
        head, ext = 0, b""
        for nibble_shift, n in ((4, delta), (0, length)):
            if n < 13:
                head |= n << nibble_shift
            elif n < 269:
                head |= 13 << nibble_shift
                ext += bytes([n - 13])
            else:
                head |= 14 << nibble_shift
                ext += struct.pack(">H", n - 269)
        out += bytes([head]) + ext + value
    if payload:
        out += b"\xff" + payload
    return out


def coap_decode(data):
    tkl = data[0] & 0x0F
    m = {
        "type": (data[0] >> 4) & 0x03,
        "code": data[1],
        "mid": struct.unpack(">H", data[2:4])[0],
        "token": data[4 : 4 + tkl],
        "options": {},
        "payload": b"",
    }
    i, number = 4 + tkl, 0
    while i < len(data):
        if data[i] == 0xFF:
            m["payload"] = data[i + 1 :]
            break
        delta, length = data[i] >> 4, data[i] & 0x0F
        i += 1
        if delta == 13:
            delta, i = data[i] + 13, i + 1
        elif delta == 14:
            delta, i = struct.unpack(">H", data[i : i + 2])[0] + 269, i + 2
        if length == 13:
            length, i = data[i] + 13, i + 1
        elif length == 14:
            length, i = struct.unpack(">H", data[i : i + 2])[0] + 269, i + 2
        number += delta
        m["options"].setdefault(number, []).append(data[i : i + length])
        i += length
    return m


# ---------------------------------------------------------------------------------------
# Payloads, decoded independently of the client


def tlv_resources(data):
    """{resource id: (identifier kind, value bytes)} of a TLV sequence of resources."""
    out, i = {}, 0
    while i < len(data):
        t = data[i]
        id_len = 2 if t & 0x20 else 1
        len_len = (t >> 3) & 3
        ident = int.from_bytes(data[i + 1 : i + 1 + id_len], "big")
        j = i + 1 + id_len
        n = int.from_bytes(data[j : j + len_len], "big") if len_len else t & 7
        j += len_len
        out[ident] = (t >> 6, data[j : j + n])
        i = j + n
    return out


def tlv_float(data):
    ((kind, value),) = tlv_resources(data).values()
    return struct.unpack(">f" if len(value) == 4 else ">d", value)[0]


def senml_values(payload):
    """{full name: (value key, value)} of SenML JSON records."""
    out, base = {}, ""
    for record in json.loads(payload):
        base = record.get("bn", base)
        key = next(k for k in ("v", "vs", "vb", "vd", "vlo") if k in record)
        out[base + record.get("n", "")] = (key, record[key])
    return out


if __name__ == "__main__":
    main()
