#!/usr/bin/env python3
"""A scriptable LwM2M 1.1 client for omadmd's gateway tests, on aiocoap's CoAP stack (not
omadmd's): it registers with an LwM2M server, serves Read, Write, Execute, Observe,
Write-Attributes and Discover on a Device object (3) and an IPSO temperature sensor (3303),
and is driven over stdin and reports over stdout, one JSON object a line.

One aiocoap server context, on one UDP socket (the udp6 transport only), both serves the
server's requests and sends Register, Update and De-register: the LwM2M server sends its
requests to the address and port the Register came from.

Commands (stdin):
  {"cmd": "set", "path": "/3303/0/5700", "value": 23.0}  a new value (a multiple resource
      takes {"riid": value}; opaque values are base64); its observers are notified
  {"cmd": "register"}, {"cmd": "update"} (optional "lt", "b"), {"cmd": "deregister"}
  {"cmd": "vanish"}    every datagram in or out is dropped from now on: no ACK, no answer,
                       no notification, no update (a device gone mid-command)
  {"cmd": "reappear"}  undoes vanish
  {"cmd": "quit"}      exits without de-registering; so does the end of stdin

Events (stdout), each {"ev": NAME, ...}:
  ready {port, address}            the socket is bound
  registered {location}            register_failed {code}   ("4.03", or "timeout")
  updated                          update_failed {code}     (after 4.04 it registers anew)
  deregistered                     deregister_failed {code}
  read {path, format}              format: tlv, senml, text, opaque
  write {path, format, mode, values}   mode: replace (PUT) or partial (POST); values:
                                   {"/3/0/15": "Europe/Berlin", "/3/0/6/0": 1}
  execute {path[, args]}           observe {path, format}   cancel {path}
  notified {path, format}          attributes {path, attrs}  discover {path}
  refused {op, path, code, why}    a request answered with an error (4.04, 4.05, 4.06...)
  set {path, value}  vanished  reappeared
  error {message}                  a command it could not take (also on stderr)
Diagnostics go to stderr.

Payload formats are the LwM2M TS Core 1.1 §7.4 ones: TLV (11542, §7.4.3), SenML JSON (110,
RFC 8428 with LwM2M's names, §7.4.5), plain text (0) for single values, opaque (42).
Register is POST /rd?ep=..&lt=..&lwm2m=1.1&b=.. with link format (40):
`</>;rt="oma.lwm2m";ct="110 11542",</3>;ver=1.2,</3/0>,</3303>;ver=1.1,</3303/0>` (ct=110
with --refuse-tlv): the formats it speaks, each object's version on the object's link.
Observations honour pmin and pmax from Write-Attributes: a pmin delays notifications.
"""

import argparse
import asyncio
import base64
import json
import logging
import struct
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

try:
    import aiocoap
    from aiocoap import interfaces
    from aiocoap.numbers.codes import Code
except ImportError:
    sys.stderr.write(
        "lwm2m_client: aiocoap is missing: "
        "python3 -m pip install --break-system-packages aiocoap==0.4.14\n"
    )
    sys.exit(3)

CF_TEXT = 0
CF_LINK = 40
CF_OPAQUE = 42
CF_SENML_JSON = 110
CF_TLV = 11542

FORMAT_NAMES = {CF_TEXT: "text", CF_OPAQUE: "opaque", CF_SENML_JSON: "senml", CF_TLV: "tlv"}

# Bounds on what a server may send.
MAX_PAYLOAD = 64 * 1024
MAX_TLV_DEPTH = 3
MAX_SENML_RECORDS = 256

# The update is sent when this share of the lifetime has passed.
UPDATE_AT = 0.8


def main():
    args = parse_args(sys.argv[1:])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        asyncio.run(Client(args).run())
    except UsageError as e:
        sys.stderr.write(f"lwm2m_client: {e}\n")
        sys.exit(2)


# ---------------------------------------------------------------------------------------
# Command line


class UsageError(Exception):
    pass


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", required=True, help="coap://HOST:PORT of the LwM2M server")
    p.add_argument(
        "--bind",
        help="HOST:PORT ([v6]:PORT) to serve on; default: loopback of the server's "
        "family, an ephemeral port",
    )
    p.add_argument("--ep", default="lwm2m-test-client", help="endpoint name")
    p.add_argument("--lifetime", type=int, default=60, help="registration lifetime, seconds")
    p.add_argument("--binding", choices=["U", "UQ"], default="U")
    p.add_argument(
        "--format",
        choices=["tlv", "senml"],
        help="what Reads without Accept are answered in (default tlv, senml with "
        "--refuse-tlv)",
    )
    p.add_argument(
        "--refuse-tlv", action="store_true", help="answer 4.06 to an Accept of TLV"
    )
    p.add_argument("--objects", default="3,3303", help="object ids, e.g. 3,3303")
    p.add_argument(
        "--no-register", action="store_true", help="wait for a register command"
    )
    args = p.parse_args(argv)
    if args.refuse_tlv and args.format == "tlv":
        p.error("--format tlv contradicts --refuse-tlv")
    if args.format is None:
        args.format = "senml" if args.refuse_tlv else "tlv"
    if not 1 <= args.lifetime <= 86400 * 365:
        p.error("--lifetime out of range")
    try:
        args.object_ids = [int(o) for o in args.objects.split(",") if o]
    except ValueError:
        p.error(f"--objects: not a list of object ids: {args.objects}")
    for oid in args.object_ids:
        if oid not in OBJECTS:
            p.error(f"--objects: object {oid} is not modelled (known: {sorted(OBJECTS)})")
    url = urllib.parse.urlsplit(args.server)
    if url.scheme != "coap" or not url.hostname or url.path not in ("", "/"):
        p.error(f"--server must be coap://HOST:PORT, not {args.server}")
    args.server = f"coap://{url.netloc}"
    if args.bind is None:
        args.bind = "[::1]:0" if ":" in url.hostname else "127.0.0.1:0"
    host, sep, port = args.bind.rpartition(":")
    if not sep or not port.isdigit():
        p.error(f"--bind must be HOST:PORT, not {args.bind}")
    args.bind_host, args.bind_port = host.strip("[]"), int(port)
    return args


# ---------------------------------------------------------------------------------------
# The objects this client has (LwM2M registry definitions, with realistic values)


@dataclass(frozen=True)
class ResourceDef:
    rid: int
    name: str
    kind: str  # string integer unsigned float boolean opaque time objlnk none
    ops: str  # R, W, RW, E
    multiple: bool = False

    @property
    def readable(self):
        return "R" in self.ops

    @property
    def writable(self):
        return "W" in self.ops

    @property
    def executable(self):
        return self.ops == "E"


@dataclass(frozen=True)
class ObjectDef:
    oid: int
    version: str
    resources: dict


def object_def(oid, version, *resources):
    return ObjectDef(oid, version, {r.rid: r for r in resources})


OBJECTS = {
    3: object_def(
        3,
        "1.2",
        ResourceDef(0, "Manufacturer", "string", "R"),
        ResourceDef(1, "Model Number", "string", "R"),
        ResourceDef(2, "Serial Number", "string", "R"),
        ResourceDef(3, "Firmware Version", "string", "R"),
        ResourceDef(4, "Reboot", "none", "E"),
        ResourceDef(6, "Available Power Sources", "integer", "R", multiple=True),
        ResourceDef(9, "Battery Level", "integer", "R"),
        ResourceDef(11, "Error Code", "integer", "R", multiple=True),
        ResourceDef(13, "Current Time", "time", "RW"),
        ResourceDef(14, "UTC Offset", "string", "RW"),
        ResourceDef(15, "Timezone", "string", "RW"),
        ResourceDef(16, "Supported Binding and Modes", "string", "R"),
    ),
    3303: object_def(
        3303,
        "1.1",
        ResourceDef(5700, "Sensor Value", "float", "R"),
        ResourceDef(5701, "Sensor Units", "string", "R"),
        ResourceDef(5601, "Min Measured Value", "float", "R"),
        ResourceDef(5602, "Max Measured Value", "float", "R"),
        ResourceDef(5605, "Reset Min and Max Measured Values", "none", "E"),
        ResourceDef(5750, "Application Type", "string", "RW"),
    ),
}


def initial_values(oid, binding):
    """The values of instance 0 of `oid`: {rid: value, or {riid: value} when multiple}."""
    if oid == 3:
        return {
            0: "Example Sensors",
            1: "TH-42",
            2: "ES-0042-7781",
            3: "2.1.0",
            6: {0: 1, 1: 5},
            9: 87,
            11: {0: 0},
            13: int(time.time()),
            14: "+01:00",
            15: "Europe/Paris",
            16: binding,
        }
    return {5700: 21.5, 5701: "Cel", 5601: 18.25, 5602: 23.75, 5750: "Living room"}


class Refused(Exception):
    """A request answered with an error code."""

    def __init__(self, code, why):
        super().__init__(why)
        self.code = code
        self.why = why


class Model:
    """Object instances and their values; paths are tuples of ints (oid, iid, rid, riid)."""

    def __init__(self, object_ids, binding):
        self.objects = {oid: OBJECTS[oid] for oid in object_ids}
        self.values = {(oid, 0): initial_values(oid, binding) for oid in object_ids}

    def instances(self, oid):
        return sorted(iid for (o, iid) in self.values if o == oid)

    def resolve(self, path):
        """The resource definition `path` names (None above resource level); 4.04 if the
        path names nothing here."""
        if not path or len(path) > 4 or path[0] not in self.objects:
            raise Refused(Code.NOT_FOUND, f"no object {path_str(path[:1])}")
        if len(path) == 1:
            return None
        if (path[0], path[1]) not in self.values:
            raise Refused(Code.NOT_FOUND, f"no instance {path_str(path[:2])}")
        if len(path) == 2:
            return None
        rdef = self.objects[path[0]].resources.get(path[2])
        if rdef is None or (not rdef.executable and path[2] not in self.values[path[:2]]):
            raise Refused(Code.NOT_FOUND, f"no resource {path_str(path[:3])}")
        if len(path) == 4:
            if not rdef.multiple or path[3] not in self.values[path[:2]][path[2]]:
                raise Refused(Code.NOT_FOUND, f"no resource instance {path_str(path)}")
        return rdef

    def leaves(self, path):
        """The readable values at and below `path`: [(leaf path, rdef, value)], a leaf path
        being (oid, iid, rid) or (oid, iid, rid, riid). 4.05 for a path naming an
        unreadable resource."""
        rdef = self.resolve(path)
        if rdef is not None and not rdef.readable:
            raise Refused(Code.METHOD_NOT_ALLOWED, f"{path_str(path)} is not readable")
        out = []
        for (oid, iid), resources in sorted(self.values.items()):
            if (oid, iid)[: len(path)] != path[:2]:
                continue
            odef = self.objects[oid]
            for rid in sorted(resources):
                rdef = odef.resources[rid]
                if len(path) >= 3 and rid != path[2] or not rdef.readable:
                    continue
                value = resources[rid]
                if rdef.multiple:
                    for riid in sorted(value):
                        if len(path) == 4 and riid != path[3]:
                            continue
                        out.append(((oid, iid, rid, riid), rdef, value[riid]))
                else:
                    out.append(((oid, iid, rid), rdef, value))
        return out

    def get(self, leaf):
        value = self.values[leaf[:2]][leaf[2]]
        return value[leaf[3]] if len(leaf) == 4 else value

    def put(self, leaf, value):
        resources = self.values[leaf[:2]]
        if len(leaf) == 4:
            resources[leaf[2]][leaf[3]] = value
        else:
            resources[leaf[2]] = value


# ---------------------------------------------------------------------------------------
# Values: typed Python values <-> TLV bytes, SenML fields, plain text, event JSON


def encode_value(kind, v):
    """TLV value bytes of `v` (TS Core §7.4.3.1's encodings)."""
    if kind == "string":
        return v.encode("utf-8")
    if kind in ("integer", "time"):
        for n, fmt in ((1, ">b"), (2, ">h"), (4, ">i"), (8, ">q")):
            if -(1 << (8 * n - 1)) <= v < 1 << (8 * n - 1):
                return struct.pack(fmt, v)
        raise ValueError(f"integer out of range: {v}")
    if kind == "unsigned":
        for n, fmt in ((1, ">B"), (2, ">H"), (4, ">I"), (8, ">Q")):
            if 0 <= v < 1 << (8 * n):
                return struct.pack(fmt, v)
        raise ValueError(f"unsigned integer out of range: {v}")
    if kind == "float":
        single = struct.pack(">f", v)
        return single if struct.unpack(">f", single)[0] == v else struct.pack(">d", v)
    if kind == "boolean":
        return b"\x01" if v else b"\x00"
    if kind == "objlnk":
        oid, iid = v.split(":")
        return struct.pack(">HH", int(oid), int(iid))
    if kind == "opaque":
        return v
    raise ValueError(f"no value for kind {kind}")


def decode_value(kind, b):
    """The typed value of TLV value bytes `b`; ValueError if they do not fit `kind`."""
    if kind == "string":
        return b.decode("utf-8")
    if kind in ("integer", "time"):
        fmts = {1: ">b", 2: ">h", 4: ">i", 8: ">q"}
        if len(b) not in fmts:
            raise ValueError(f"integer of {len(b)} bytes")
        return struct.unpack(fmts[len(b)], b)[0]
    if kind == "unsigned":
        fmts = {1: ">B", 2: ">H", 4: ">I", 8: ">Q"}
        if len(b) not in fmts:
            raise ValueError(f"unsigned integer of {len(b)} bytes")
        return struct.unpack(fmts[len(b)], b)[0]
    if kind == "float":
        fmts = {4: ">f", 8: ">d"}
        if len(b) not in fmts:
            raise ValueError(f"float of {len(b)} bytes")
        return struct.unpack(fmts[len(b)], b)[0]
    if kind == "boolean":
        if b not in (b"\x00", b"\x01"):
            raise ValueError(f"boolean {b.hex()}")
        return b == b"\x01"
    if kind == "objlnk":
        if len(b) != 4:
            raise ValueError(f"object link of {len(b)} bytes")
        return "%d:%d" % struct.unpack(">HH", b)
    if kind == "opaque":
        return bytes(b)
    raise ValueError(f"no value for kind {kind}")


def senml_field(kind, v):
    """The SenML JSON value field of `v`: (key, JSON value)."""
    if kind in ("integer", "unsigned", "time", "float"):
        return "v", v
    if kind == "boolean":
        return "vb", v
    if kind == "opaque":
        return "vd", base64.urlsafe_b64encode(v).decode("ascii").rstrip("=")
    if kind == "objlnk":
        return "vlo", v
    return "vs", v


def from_senml(kind, record):
    """The typed value of a SenML record for a resource of `kind`."""
    if kind in ("integer", "unsigned", "time"):
        v = record.get("v")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
            raise ValueError(f"not an integer: {v!r}")
        v = int(v)
        if kind == "unsigned" and v < 0:
            raise ValueError(f"negative unsigned integer: {v}")
        return v
    if kind == "float":
        v = record.get("v")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"not a number: {v!r}")
        return float(v)
    if kind == "boolean":
        if not isinstance(record.get("vb"), bool):
            raise ValueError(f"no vb: {record!r}")
        return record["vb"]
    if kind == "opaque":
        vd = record.get("vd")
        if not isinstance(vd, str):
            raise ValueError(f"no vd: {record!r}")
        return base64.urlsafe_b64decode(vd + "=" * (-len(vd) % 4))
    key = "vlo" if kind == "objlnk" else "vs"
    if not isinstance(record.get(key), str):
        raise ValueError(f"no {key}: {record!r}")
    if kind == "objlnk":
        check_objlnk(record[key])
    return record[key]


def to_text(kind, v):
    if kind == "boolean":
        return "1" if v else "0"
    if kind == "float":
        return repr(v)
    return str(v)


def from_text(kind, text):
    if kind in ("integer", "time", "unsigned"):
        v = int(text)
        if kind == "unsigned" and v < 0:
            raise ValueError(f"negative unsigned integer: {v}")
        return v
    if kind == "float":
        return float(text)
    if kind == "boolean":
        if text not in ("0", "1"):
            raise ValueError(f"boolean {text!r}")
        return text == "1"
    if kind == "objlnk":
        check_objlnk(text)
    return text


def from_json(kind, v):
    """The typed value of a JSON value given in a command (opaque: base64)."""
    if kind == "opaque":
        return base64.b64decode(v)
    if kind in ("integer", "unsigned", "time"):
        return int(v)
    if kind == "float":
        return float(v)
    if kind == "boolean":
        return bool(v)
    if kind == "objlnk":
        check_objlnk(v)
    return str(v)


def to_json(v):
    """`v` as event JSON: opaque values as base64."""
    if isinstance(v, bytes):
        return base64.b64encode(v).decode("ascii")
    if isinstance(v, dict):
        return {str(k): to_json(x) for k, x in v.items()}
    return v


def check_objlnk(v):
    oid, sep, iid = v.partition(":")
    if not sep or not (0 <= int(oid) <= 65535 and 0 <= int(iid) <= 65535):
        raise ValueError(f"object link {v!r}")


# ---------------------------------------------------------------------------------------
# TLV (TS Core §7.4.3)

TLV_INSTANCE = 0  # Object Instance: nested resources
TLV_RESOURCE_INSTANCE = 1
TLV_MULTIPLE = 2  # Multiple Resource: nested resource instances
TLV_RESOURCE = 3  # Resource with value


def tlv(kind, ident, value):
    """One TLV: the type byte (identifier kind in bits 7-6, identifier width in bit 5,
    length width in bits 4-3, a short length in bits 2-0), identifier, length, value."""
    type_byte = kind << 6
    ident_bytes = struct.pack(">B", ident) if ident < 256 else struct.pack(">H", ident)
    if ident >= 256:
        type_byte |= 0x20
    n = len(value)
    if n < 8:
        type_byte |= n
        length = b""
    elif n < 1 << 8:
        type_byte |= 1 << 3
        length = struct.pack(">B", n)
    elif n < 1 << 16:
        type_byte |= 2 << 3
        length = struct.pack(">H", n)
    elif n < 1 << 24:
        type_byte |= 3 << 3
        length = struct.pack(">I", n)[1:]
    else:
        raise ValueError(f"TLV value of {n} bytes")
    return bytes([type_byte]) + ident_bytes + length + value


def tlv_parse(data):
    """[(kind, identifier, value bytes)] of a TLV sequence; ValueError if malformed."""
    out = []
    i = 0
    while i < len(data):
        t = data[i]
        i += 1
        kind = t >> 6
        id_len = 2 if t & 0x20 else 1
        len_len = (t >> 3) & 0x03
        if i + id_len + len_len > len(data):
            raise ValueError("TLV header cut short")
        ident = int.from_bytes(data[i : i + id_len], "big")
        i += id_len
        if len_len:
            n = int.from_bytes(data[i : i + len_len], "big")
            i += len_len
        else:
            n = t & 0x07
        if i + n > len(data):
            raise ValueError("TLV value cut short")
        out.append((kind, ident, data[i : i + n]))
        i += n
    return out


def tlv_encode(path, leaves):
    """The TLV payload of a Read of `path`: object instances for an object, resources for
    an instance, one resource (or resource instance) for a resource (instance)."""
    by_instance = {}
    for leaf, rdef, v in leaves:
        by_instance.setdefault(leaf[:2], {}).setdefault(leaf[2], []).append((leaf, rdef, v))

    def resource(rid, items):
        rdef = items[0][1]
        if not rdef.multiple:
            return tlv(TLV_RESOURCE, rid, encode_value(rdef.kind, items[0][2]))
        inner = b"".join(
            tlv(TLV_RESOURCE_INSTANCE, leaf[3], encode_value(rdef.kind, v))
            for leaf, _, v in items
        )
        return tlv(TLV_MULTIPLE, rid, inner)

    def resources(res):
        return b"".join(resource(rid, items) for rid, items in res.items())

    if len(path) == 1:
        return b"".join(
            tlv(TLV_INSTANCE, key[1], resources(res)) for key, res in by_instance.items()
        )
    if len(path) == 4:
        leaf, rdef, v = leaves[0]
        return tlv(TLV_RESOURCE_INSTANCE, leaf[3], encode_value(rdef.kind, v))
    return b"".join(resources(res) for res in by_instance.values())


def tlv_write_leaves(path, data):
    """The leaves a TLV Write on `path` carries: ([(leaf path, value bytes)], the paths of
    multiple resources given whole)."""
    leaves, whole = [], []

    def walk(base, entries, depth):
        if depth > MAX_TLV_DEPTH:
            raise ValueError("TLV nested too deep")
        for kind, ident, value in entries:
            if kind == TLV_RESOURCE and len(base) == 2:
                leaves.append((base + (ident,), value))
            elif kind == TLV_MULTIPLE and len(base) == 2:
                whole.append(base + (ident,))
                walk(base + (ident,), tlv_parse(value), depth + 1)
            elif kind == TLV_RESOURCE_INSTANCE and len(base) == 3:
                leaves.append((base + (ident,), value))
            else:
                raise ValueError(f"TLV of kind {kind} id {ident} below {path_str(base)}")

    entries = tlv_parse(data)
    if len(path) == 2:
        if len(entries) == 1 and entries[0][0] == TLV_INSTANCE:
            if entries[0][1] != path[1]:
                raise ValueError("TLV names another instance")
            entries = tlv_parse(entries[0][2])
        walk(path, entries, 1)
    elif len(path) == 3:
        if all(kind == TLV_RESOURCE_INSTANCE for kind, _, _ in entries):
            whole.append(path)
            walk(path, entries, 1)
        else:
            if len(entries) != 1 or entries[0][1] != path[2]:
                raise ValueError(f"TLV does not carry resource {path[2]} alone")
            walk(path[:2], entries, 1)
    elif len(path) == 4:
        if len(entries) != 1 or entries[0][:2] != (TLV_RESOURCE_INSTANCE, path[3]):
            raise ValueError(f"TLV does not carry resource instance {path[3]} alone")
        walk(path[:3], entries, 1)
    else:
        raise ValueError("TLV write above instance level")
    return leaves, whole


# ---------------------------------------------------------------------------------------
# SenML JSON (RFC 8428; LwM2M TS Core §7.4.5)


def senml_encode(path, leaves):
    """SenML records: the base name is the object ("/3/") or instance ("/3/0/") path, each
    record's name the rest ("0", "6/1")."""
    base = path[:2]
    records = []
    for leaf, rdef, v in leaves:
        key, value = senml_field(rdef.kind, v)
        record = {"n": "/".join(str(x) for x in leaf[len(base) :]), key: value}
        if not records:
            record = {"bn": path_str(base) + "/", **record}
        records.append(record)
    return json.dumps(records, separators=(",", ":")).encode("utf-8")


def senml_write_leaves(path, data):
    """The records of a SenML Write on `path`: ([(leaf path, record)], the paths of
    multiple resources given whole)."""
    records = json.loads(data.decode("utf-8"))
    if not isinstance(records, list) or not records:
        raise ValueError("SenML JSON is not a non-empty array")
    if len(records) > MAX_SENML_RECORDS:
        raise ValueError(f"more than {MAX_SENML_RECORDS} SenML records")
    leaves, whole = [], set()
    base = ""
    for record in records:
        if not isinstance(record, dict):
            raise ValueError(f"SenML record is not an object: {record!r}")
        base = record.get("bn", base)
        name = base + record.get("n", "")
        leaf = parse_path(name)
        if leaf[: len(path)] != path or len(leaf) not in (3, 4):
            raise ValueError(f"SenML name {name} is not a resource below {path_str(path)}")
        if len(leaf) == 4 and len(path) <= 3:
            whole.add(leaf[:3])
        leaves.append((leaf, record))
    return leaves, sorted(whole)


# ---------------------------------------------------------------------------------------
# Paths and messages


def path_str(path):
    return "/" + "/".join(str(x) for x in path)


def parse_path(text):
    """(oid, iid, rid, riid) prefix of an LwM2M path such as "/3/0/15"; ValueError if it is
    not one."""
    parts = [p for p in text.split("/") if p]
    if not 1 <= len(parts) <= 4 or not all(p.isdigit() and int(p) <= 65535 for p in parts):
        raise ValueError(f"not an LwM2M path: {text!r}")
    return tuple(int(p) for p in parts)


def dotted(code):
    return Code(code).dotted


def content(payload, cf):
    return aiocoap.Message(code=Code.CONTENT, payload=payload, content_format=cf)


# ---------------------------------------------------------------------------------------
# The client


@dataclass
class Observation:
    """One Observe relationship: the request it was made with (its Accept decides the
    notifications' format) and aiocoap's handle on it."""

    path: tuple
    request: object
    servobs: object
    last: float
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    task: object = None


class Client(interfaces.ObservableResource):
    """The LwM2M client: aiocoap's server site for every path, and the registration."""

    def __init__(self, args):
        super().__init__()
        self.args = args
        self.model = Model(args.object_ids, args.binding)
        self.attributes = {}  # path -> {"pmin": s, "pmax": s}
        self.observations = []
        self.location = None
        self.update_timer = None
        self.registration_lock = asyncio.Lock()
        self.present = asyncio.Event()
        self.present.set()
        self.closing = False
        self.context = None
        self.socket_interface = None
        self.tasks = set()

    # -- life cycle ---------------------------------------------------------------------

    async def run(self):
        self.context = await aiocoap.Context.create_server_context(
            self, bind=(self.args.bind_host, self.args.bind_port), transports=["udp6"]
        )
        # The one udp6 transport: its socket serves and sends.
        (tokens,) = self.context.request_interfaces
        self.socket_interface = tokens.token_interface.message_interface
        sock = self.socket_interface.transport.get_extra_info("socket")
        self.emit("ready", port=sock.getsockname()[1], address=self.args.bind_host)
        if not self.args.no_register:
            self.spawn(self.register())
        await self.control()
        self.closing = True
        for task in list(self.tasks):
            task.cancel()
        for obs in self.observations:
            obs.task.cancel()
        await self.context.shutdown()

    def spawn(self, coro):
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def emit(self, ev, **fields):
        sys.stdout.write(json.dumps({"ev": ev, **fields}) + "\n")
        sys.stdout.flush()

    # -- control over stdin -------------------------------------------------------------

    async def control(self):
        loop = asyncio.get_running_loop()
        lines = asyncio.Queue()

        def read_stdin():
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, None)

        threading.Thread(target=read_stdin, daemon=True).start()
        while True:
            line = await lines.get()
            if line is None:
                return
            if not line.strip():
                continue
            try:
                cmd = json.loads(line)
                name = cmd["cmd"]
            except (ValueError, TypeError, KeyError) as e:
                self.bad_command(f"bad command line {line.strip()!r}: {e}")
                continue
            if name == "quit":
                return
            try:
                self.command(name, cmd)
            except (ValueError, KeyError, TypeError, Refused) as e:
                self.bad_command(f"command {line.strip()!r} failed: {e}")

    def command(self, name, cmd):
        if name == "set":
            self.set_value(cmd["path"], cmd["value"])
        elif name == "register":
            self.spawn(self.register())
        elif name == "update":
            self.spawn(self.update(cmd.get("lt"), cmd.get("b")))
        elif name == "deregister":
            self.spawn(self.deregister())
        elif name == "vanish":
            self.vanish()
        elif name == "reappear":
            self.reappear()
        else:
            raise ValueError(f"unknown command {name}")

    def complain(self, message):
        sys.stderr.write(f"lwm2m_client: {message}\n")
        sys.stderr.flush()

    def bad_command(self, message):
        """A command the test got wrong: said on stderr and as an "error" event."""
        self.complain(message)
        self.emit("error", message=message)

    def set_value(self, text, value):
        path = parse_path(text)
        rdef = self.model.resolve(path)
        if rdef is None or rdef.executable:
            raise ValueError(f"{text} is not a resource with a value")
        if len(path) == 3 and rdef.multiple:
            if not isinstance(value, dict):
                raise ValueError(f"{text} is a multiple resource: give {{riid: value}}")
            new = {int(k): from_json(rdef.kind, v) for k, v in value.items()}
        else:
            new = from_json(rdef.kind, value)
        self.model.put(path, new)
        changed = [path]
        if path[0] == 3303 and path[2] == 5700:
            changed += self.track_min_max(path[:2], new)
        self.emit("set", path=text, value=to_json(new))
        self.changed(changed)

    def track_min_max(self, instance, v):
        """A new sensor value moves the measured minimum and maximum."""
        changed = []
        for rid, better in ((5601, min), (5602, max)):
            old = self.model.get(instance + (rid,))
            if better(old, v) != old:
                self.model.put(instance + (rid,), v)
                changed.append(instance + (rid,))
        return changed

    def vanish(self):
        """From now on, every datagram in or out is dropped: no ACK, no answer, nothing sent."""
        if not self.present.is_set():
            return
        self.present.clear()
        self.socket_interface.datagram_msg_received = lambda *a: None
        self.socket_interface.send = lambda message: None
        self.emit("vanished")

    def reappear(self):
        if self.present.is_set():
            return
        del self.socket_interface.datagram_msg_received
        del self.socket_interface.send
        self.present.set()
        self.emit("reappeared")

    # -- registration (TS Core §6.2) ----------------------------------------------------

    def register_links(self):
        ct = str(CF_SENML_JSON) if self.args.refuse_tlv else f'"{CF_SENML_JSON} {CF_TLV}"'
        links = [f'</>;rt="oma.lwm2m";ct={ct}']
        for oid, odef in self.model.objects.items():
            links.append(f"</{oid}>;ver={odef.version}")
            links += [f"</{oid}/{iid}>" for iid in self.model.instances(oid)]
        return ",".join(links)

    async def register(self):
        async with self.registration_lock:
            self.cancel_update_timer()
            request = aiocoap.Message(
                code=Code.POST,
                uri=f"{self.args.server}/rd",
                payload=self.register_links().encode("utf-8"),
                content_format=CF_LINK,
            )
            request.opt.uri_query = (
                f"ep={self.args.ep}",
                f"lt={self.args.lifetime}",
                "lwm2m=1.1",
                f"b={self.args.binding}",
            )
            response = await self.exchange(request, "register_failed")
            if response is None:
                return
            if response.code != Code.CREATED or not response.opt.location_path:
                self.complain(f"Register answered {dotted(response.code)}")
                self.emit("register_failed", code=dotted(response.code))
                return
            self.location = "/" + "/".join(response.opt.location_path)
            self.emit("registered", location=self.location)
            self.schedule_update()

    async def update(self, lifetime=None, binding=None):
        async with self.registration_lock:
            if self.location is None:
                self.bad_command("update: not registered")
                return
            self.cancel_update_timer()
            request = aiocoap.Message(code=Code.POST, uri=self.args.server + self.location)
            query = []
            if lifetime is not None:
                self.args.lifetime = int(lifetime)
                query.append(f"lt={self.args.lifetime}")
            if binding is not None:
                self.args.binding = str(binding)
                query.append(f"b={self.args.binding}")
            request.opt.uri_query = tuple(query)
            response = await self.exchange(request, "update_failed")
            if response is None:
                self.schedule_update()
                return
            if response.code != Code.CHANGED:
                self.emit("update_failed", code=dotted(response.code))
                if response.code == Code.NOT_FOUND:
                    # The server forgot the registration: register anew (§6.2.2).
                    self.location = None
                    self.spawn(self.register())
                return
            self.emit("updated")
            self.schedule_update()

    async def deregister(self):
        async with self.registration_lock:
            if self.location is None:
                self.bad_command("deregister: not registered")
                return
            self.cancel_update_timer()
            request = aiocoap.Message(code=Code.DELETE, uri=self.args.server + self.location)
            response = await self.exchange(request, "deregister_failed")
            if response is None:
                return
            if response.code != Code.DELETED:
                self.emit("deregister_failed", code=dotted(response.code))
                return
            self.location = None
            self.emit("deregistered")

    async def exchange(self, request, failure_event):
        """The server's response to `request`, or None (the failure reported) when none
        came."""
        try:
            return await self.context.request(request).response
        except aiocoap.error.Error as e:
            self.complain(f"{request.code} {request.opt.uri_path}: {e!r}")
            self.emit(failure_event, code="timeout")
            return None

    def schedule_update(self):
        self.cancel_update_timer()
        loop = asyncio.get_running_loop()
        self.update_timer = loop.call_later(
            self.args.lifetime * UPDATE_AT, lambda: self.spawn(self.timed_update())
        )

    async def timed_update(self):
        await self.present.wait()
        await self.update()

    def cancel_update_timer(self):
        if self.update_timer is not None:
            self.update_timer.cancel()
            self.update_timer = None

    # -- aiocoap's resource interface ---------------------------------------------------

    async def render_to_pipe(self, pipe):
        await interfaces.ObservableResource._render_to_pipe(self, pipe)

    async def needs_blockwise_assembly(self, request):
        return True

    async def add_observation(self, request, servobs):
        """Observe:0 on a GET: accepted when the path reads (the first response is rendered
        afterwards by `render`)."""
        try:
            path = request_path(request)
            _, fmt = self.read(path, request)
        except Refused:
            servobs.accept(lambda: None)
            return
        loop = asyncio.get_running_loop()
        obs = Observation(path, request, servobs, loop.time())
        servobs.accept(lambda: self.observation_ended(obs))
        obs.task = self.spawn(self.observe(obs))
        self.observations.append(obs)
        self.emit("observe", path=path_str(path), format=fmt)

    def observation_ended(self, obs):
        obs.task.cancel()
        if obs in self.observations:
            self.observations.remove(obs)
            if not self.closing:
                self.emit("cancel", path=path_str(obs.path))

    async def render(self, request):
        """Every request of the LwM2M server, by method and path."""
        method = request.code
        op = {Code.GET: "read", Code.PUT: "write", Code.POST: "write", Code.DELETE: "delete"}
        op = op.get(method, "other")
        text = "/" + "/".join(request.opt.uri_path)
        try:
            if len(request.payload) > MAX_PAYLOAD:
                raise Refused(Code.REQUEST_ENTITY_TOO_LARGE, "payload too large")
            path = request_path(request)
            if method == Code.GET:
                accept = request.opt.accept
                if accept is not None and int(accept) == CF_LINK:
                    op = "discover"
                    return self.discover(path)
                response, fmt = self.read(path, request)
                if request.opt.observe != 0:
                    self.emit("read", path=path_str(path), format=fmt)
                return response
            if method == Code.PUT:
                if request.opt.uri_query:
                    op = "attributes"
                    return self.write_attributes(path, request)
                return self.write(path, request, replace=True)
            if method == Code.POST:
                if len(path) == 3:
                    op = "execute"
                    return self.execute(path, request)
                if len(path) == 2:
                    return self.write(path, request, replace=False)
            raise Refused(Code.METHOD_NOT_ALLOWED, f"{method} on {text} is not offered")
        except Refused as e:
            self.emit("refused", op=op, path=text, code=dotted(e.code), why=e.why)
            return aiocoap.Message(code=e.code, payload=e.why.encode("utf-8"))

    # -- the operations (TS Core §6.3, §6.4) --------------------------------------------

    def read(self, path, request):
        """The Read response for `path` in the format the request accepts: (message, format
        name)."""
        leaves = self.model.leaves(path)
        accept = request.opt.accept
        cf = int(accept) if accept is not None else self.default_format()
        if cf == CF_TLV and not self.args.refuse_tlv:
            return content(tlv_encode(path, leaves), CF_TLV), "tlv"
        if cf == CF_SENML_JSON:
            return content(senml_encode(path, leaves), CF_SENML_JSON), "senml"
        single = len(leaves) == 1 and (len(path) == 4 or not leaves[0][1].multiple)
        if cf == CF_TEXT and single and leaves[0][1].kind != "opaque":
            text = to_text(leaves[0][1].kind, leaves[0][2]).encode("utf-8")
            return content(text, CF_TEXT), "text"
        if cf == CF_OPAQUE and single and leaves[0][1].kind == "opaque":
            return content(leaves[0][2], CF_OPAQUE), "opaque"
        raise Refused(Code.NOT_ACCEPTABLE, f"cannot answer {path_str(path)} in format {cf}")

    def default_format(self):
        return CF_TLV if self.args.format == "tlv" else CF_SENML_JSON

    def write(self, path, request, replace):
        """Write-Replace (PUT) or Write-Partial-Update (POST on an instance): all or
        nothing."""
        if len(path) < 2:
            raise Refused(Code.METHOD_NOT_ALLOWED, "a write needs an instance")
        self.model.resolve(path)
        cf = request.opt.content_format
        cf = None if cf is None else int(cf)
        try:
            if cf == CF_TLV:
                raw, whole = tlv_write_leaves(path, request.payload)
                typed = self.typed(raw, lambda rdef, b: decode_value(rdef.kind, b))
            elif cf == CF_SENML_JSON:
                raw, whole = senml_write_leaves(path, request.payload)
                typed = self.typed(raw, lambda rdef, record: from_senml(rdef.kind, record))
            elif cf in (CF_TEXT, CF_OPAQUE) and len(path) >= 3:
                raw, whole = [(path, request.payload)], []
                typed = self.typed(raw, lambda rdef, b: single_value(rdef, cf, b))
            else:
                raise Refused(Code.UNSUPPORTED_CONTENT_FORMAT, f"cannot write format {cf}")
            self.check_whole(whole)
        except (ValueError, UnicodeDecodeError, struct.error) as e:
            raise Refused(Code.BAD_REQUEST, f"bad payload: {e}") from None
        for leaf in whole:
            if replace or len(path) == 3:
                self.model.put(leaf, {})
        for leaf, value in typed:
            self.model.put(leaf, value)
        changed = [leaf for leaf, _ in typed] + whole
        self.emit(
            "write",
            path=path_str(path),
            format=FORMAT_NAMES[cf],
            mode="replace" if replace else "partial",
            values={path_str(leaf): to_json(v) for leaf, v in typed},
        )
        self.changed(changed)
        return aiocoap.Message(code=Code.CHANGED)

    def typed(self, raw, decode):
        """[(leaf, typed value)] of a write's raw leaves: 4.04 for unknown resources, 4.05
        for unwritable ones, ValueError for values that do not fit."""
        out = []
        for leaf, item in raw:
            odef = self.model.objects.get(leaf[0])
            rdef = odef.resources.get(leaf[2]) if odef else None
            if rdef is None or leaf[:2] not in self.model.values:
                raise Refused(Code.NOT_FOUND, f"no resource {path_str(leaf[:3])}")
            if not rdef.writable:
                raise Refused(Code.METHOD_NOT_ALLOWED, f"{path_str(leaf[:3])} is not writable")
            if (len(leaf) == 4) != rdef.multiple:
                raise ValueError(f"{path_str(leaf)} does not fit the resource's instances")
            out.append((leaf, decode(rdef, item)))
        return out

    def check_whole(self, whole):
        """Multiple resources a write gives whole must be writable multiple resources."""
        for path in whole:
            rdef = self.model.resolve(path)
            if not rdef.writable:
                raise Refused(Code.METHOD_NOT_ALLOWED, f"{path_str(path)} is not writable")
            if not rdef.multiple:
                raise ValueError(f"{path_str(path)} is not a multiple resource")

    def execute(self, path, request):
        rdef = self.model.resolve(path)
        if not rdef.executable:
            raise Refused(Code.METHOD_NOT_ALLOWED, f"{path_str(path)} is not executable")
        args = request.payload.decode("utf-8", "replace")
        self.emit("execute", path=path_str(path), **({"args": args} if args else {}))
        if path[0] == 3303 and path[2] == 5605:
            current = self.model.get(path[:2] + (5700,))
            for rid in (5601, 5602):
                self.model.put(path[:2] + (rid,), current)
            self.changed([path[:2] + (5601,), path[:2] + (5602,)])
        return aiocoap.Message(code=Code.CHANGED)

    def write_attributes(self, path, request):
        """Write-Attributes (§5.4.4): pmin and pmax, in seconds; a name alone removes it."""
        self.model.resolve(path)
        if request.payload:
            raise Refused(Code.BAD_REQUEST, "Write-Attributes carries no payload")
        new = dict(self.attributes.get(path, {}))
        for item in request.opt.uri_query:
            name, sep, value = item.partition("=")
            if name not in ("pmin", "pmax"):
                raise Refused(Code.BAD_REQUEST, f"attribute {name} is not supported here")
            if not sep:
                new.pop(name, None)
                continue
            try:
                seconds = int(value)
            except ValueError:
                raise Refused(Code.BAD_REQUEST, f"{name}={value} is not seconds") from None
            if seconds < 0:
                raise Refused(Code.BAD_REQUEST, f"{name}={value} is negative")
            new[name] = seconds
        self.attributes[path] = new
        self.emit("attributes", path=path_str(path), attrs=new)
        for obs in self.observations:
            if obs.path[: len(path)] == path:
                # Its schedule starts again with the new periods.
                obs.task.cancel()
                obs.task = self.spawn(self.observe(obs))
        return aiocoap.Message(code=Code.CHANGED)

    def discover(self, path):
        """Discover (§5.4.2): the links at and below `path`, in link format."""
        if len(path) > 3:
            raise Refused(Code.BAD_REQUEST, "Discover on a resource instance")
        self.model.resolve(path)
        oid = path[0]
        links = []
        if len(path) == 1:
            links.append(f"</{oid}>;ver={self.model.objects[oid].version}")
        for iid in self.model.instances(oid):
            if len(path) >= 2 and iid != path[1]:
                continue
            if len(path) < 3:
                links.append(f"</{oid}/{iid}>")
            resources = self.model.values[(oid, iid)]
            odef = self.model.objects[oid]
            for rid, r in sorted(odef.resources.items()):
                if len(path) == 3 and rid != path[2]:
                    continue
                link = f"</{oid}/{iid}/{rid}>"
                if r.multiple:
                    link += f";dim={len(resources[rid])}"
                links.append(link)
        self.emit("discover", path=path_str(path))
        return content(",".join(links).encode("utf-8"), CF_LINK)

    # -- notifications (TS Core §6.4.1; RFC 7641) ---------------------------------------

    def changed(self, leaves):
        """Marks the observations that see any of `leaves` (paths at or above them, or
        below them)."""
        for obs in self.observations:
            for leaf in leaves:
                n = min(len(obs.path), len(leaf))
                if obs.path[:n] == leaf[:n]:
                    obs.dirty.set()
                    break

    def attribute(self, path, name):
        """The effective `name` attribute of `path`: its own, else its nearest parent's."""
        for n in range(len(path), 0, -1):
            value = self.attributes.get(path[:n], {}).get(name)
            if value is not None:
                return value
        return None

    async def observe(self, obs):
        """Notifies on every change, no sooner than pmin after the last notification, and
        at the latest pmax after it. Nothing is sent while the device has vanished."""
        loop = asyncio.get_running_loop()
        while True:
            pmax = self.attribute(obs.path, "pmax")
            timeout = None if not pmax else max(0.0, obs.last + pmax - loop.time())
            try:
                await asyncio.wait_for(obs.dirty.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            pmin = self.attribute(obs.path, "pmin") or 0
            wait = obs.last + pmin - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.present.wait()
            obs.dirty.clear()
            try:
                response, fmt = self.read(obs.path, obs.request)
            except Refused as e:
                response, fmt = aiocoap.Message(code=e.code), None
            obs.last = loop.time()
            obs.servobs.trigger(response)
            self.emit("notified", path=path_str(obs.path), format=fmt)


def request_path(request):
    """The LwM2M path of a request (trailing empty segments ignored); 4.04 if the path is
    not an LwM2M one."""
    segments = list(request.opt.uri_path)
    while segments and segments[-1] == "":
        segments.pop()
    if not 1 <= len(segments) <= 4 or not all(
        s.isdigit() and int(s) <= 65535 for s in segments
    ):
        raise Refused(Code.NOT_FOUND, f"no such path /{'/'.join(segments)}")
    return tuple(int(s) for s in segments)


def single_value(rdef, cf, payload):
    if cf == CF_OPAQUE:
        if rdef.kind != "opaque":
            raise Refused(Code.UNSUPPORTED_CONTENT_FORMAT, "opaque for a typed resource")
        return bytes(payload)
    if rdef.kind == "opaque":
        raise Refused(Code.UNSUPPORTED_CONTENT_FORMAT, "plain text for an opaque resource")
    return from_text(rdef.kind, payload.decode("utf-8"))


if __name__ == "__main__":
    main()
