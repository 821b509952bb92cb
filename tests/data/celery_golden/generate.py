#!/usr/bin/python3
"""Generate byte-level golden Celery/kombu/py-amqp wire messages.

Run from the repository root with the Debian interpreter that has the real
client libraries installed (Celery 5.2.6, kombu 5.2.4, py-amqp 5.1.1):

    /usr/bin/python3 tests/data/celery_golden/generate.py

No network and no broker are used.  The unmodified Celery/kombu/py-amqp code
runs against an in-process *fake RabbitMQ* that sits below py-amqp's
transport layer (``amqp.transport._AbstractTransport._read/_write``): py-amqp
performs the full AMQP 0-9-1 handshake, opens channels, declares entities and
publishes messages, and every byte it writes is parsed back into AMQP frames
here.  The golden files therefore contain exactly the bytes py-amqp would put
on a TCP socket.  The fake broker answers the synchronous methods
(Start/Tune/Open/DeclareOk/BindOk/...), routes published messages to queues
(default exchange and direct bindings) and can hand them back with basic.get
(re-using the published content-header and body bytes verbatim), which is how
the emulated Python *worker* cases receive their task messages.

Determinism (nothing is post-processed; the sources of variation are pinned
before Celery computes anything):
  * clock: every ``datetime`` class imported by celery/kombu modules is
    replaced by a subclass whose now()/utcnow() return FROZEN_NOW_UTC;
  * ids not passed explicitly: ``kombu.utils.uuid.uuid`` (as imported by
    celery/kombu modules) is replaced by a counter that yields
    00000000-0000-4000-8000-NNNNNNNNNNNN, reset at the start of every case;
  * the client "oid" (reply_to / rpc reply queue name): ``celery.app.base.
    oid_from`` computes the same uuid3 as kombu.common.generate_oid but from
    fixed inputs (node id, pid, thread id, per-app instance id);
  * ``origin`` header: ``celery.app.amqp.anon_nodename`` returns
    gen<fixed pid>@<fixed host> ("gen4242@golden-client" for client code,
    "gen4343@golden-worker" while the emulated worker runs);
  * worker tracebacks: task bodies are compiled from a string with a fixed
    file name, so tracebacks only contain fixed paths.

The script also refuses to run with other library versions (pass
--allow-other-versions to override) and blocks real socket connections.
"""

import argparse
import contextlib
import json
import linecache
import logging
import os
import socket
import struct
import sys
import types
from collections import deque
from datetime import datetime as _real_datetime
from datetime import timezone as _dt_timezone
from uuid import NAMESPACE_OID, uuid3

OUT_DIR = os.path.dirname(os.path.abspath(__file__))
EXPECTED_VERSIONS = {'celery': '5.2.6', 'kombu': '5.2.4', 'amqp': '5.1.1'}

# --------------------------------------------------------------------------
# No network, ever.
# --------------------------------------------------------------------------


def _no_network(*args, **kwargs):
    raise RuntimeError('generate.py: real network access is disabled')


socket.socket.connect = _no_network
socket.socket.connect_ex = _no_network
socket.create_connection = _no_network

logging.disable(logging.CRITICAL)

import amqp  # noqa: E402
import celery  # noqa: E402
import kombu  # noqa: E402
from amqp import serialization as amqp_ser  # noqa: E402
from amqp import transport as amqp_transport  # noqa: E402
from amqp.connection import Connection as AmqpConnection  # noqa: E402

# Import every module whose module-level names we pin below.
import celery.app.amqp  # noqa: E402,F401
import celery.app.base  # noqa: E402,F401
import celery.app.task  # noqa: E402,F401
import celery.app.trace  # noqa: E402,F401
import celery.backends.base  # noqa: E402,F401
import celery.backends.rpc  # noqa: E402,F401
import celery.canvas  # noqa: E402,F401
import celery.concurrency.solo  # noqa: E402,F401
import celery.result  # noqa: E402,F401
import celery.utils.time  # noqa: E402,F401
import celery.worker.consumer.consumer  # noqa: E402,F401
import celery.worker.request  # noqa: E402,F401
import celery.worker.state  # noqa: E402,F401
import celery.worker.strategy  # noqa: E402,F401
import kombu.common  # noqa: E402,F401
import kombu.messaging  # noqa: E402,F401
import kombu.pools  # noqa: E402,F401
import kombu.utils.uuid  # noqa: E402,F401
from celery import Celery, chain  # noqa: E402
from celery._state import _set_task_join_will_block  # noqa: E402
from celery.utils.nodenames import nodename  # noqa: E402

# --------------------------------------------------------------------------
# Determinism hooks
# --------------------------------------------------------------------------

#: The frozen "now" (naive UTC, as datetime.utcnow() returns it).
FROZEN_NOW_UTC = _real_datetime(2025, 1, 15, 10, 30, 0, 123456)


class _FrozenMeta(type):
    # Keep isinstance(x, datetime) working for real datetime objects.
    def __instancecheck__(cls, obj):
        return isinstance(obj, _real_datetime)

    def __subclasscheck__(cls, sub):
        return issubclass(sub, _real_datetime)


class FrozenDatetime(_real_datetime, metaclass=_FrozenMeta):
    """datetime whose now()/utcnow() return FROZEN_NOW_UTC (local tz = UTC)."""

    @classmethod
    def utcnow(cls):
        return FROZEN_NOW_UTC

    @classmethod
    def now(cls, tz=None):
        if tz is None:
            return FROZEN_NOW_UTC
        return FROZEN_NOW_UTC.replace(tzinfo=_dt_timezone.utc).astimezone(tz)

    @classmethod
    def today(cls):
        return FROZEN_NOW_UTC


class DeterministicUUID:
    """Replacement for kombu.utils.uuid.uuid: counter based, uuid4 shaped."""

    def __init__(self):
        self.n = 0

    def reset(self):
        self.n = 0

    def __call__(self, _uuid=None):
        self.n += 1
        return f'00000000-0000-4000-8000-{self.n:012x}'


UUIDS = DeterministicUUID()

#: Simulated process identity (pid, hostname) used for oid and origin.
PROCESS = {'pid': 4242, 'host': 'golden-client'}
CLIENT_PROCESS = {'pid': 4242, 'host': 'golden-client'}
WORKER_PROCESS = {'pid': 4343, 'host': 'golden-worker'}
WORKER_HOSTNAME = 'celery@golden-worker'
FIXED_NODE_ID = 0x5eed_0000_0000_0000_0000_0000_0000_0001
FIXED_THREAD_ID = 0x7f00_0000_1000
#: stand-in for id(app) in kombu.common.generate_oid, per app main name.
APP_INSTANCE_IDS = {'bff': 0x0b0f_f000, 'orchestrator-worker': 0x0a0a_0000}


def fixed_oid_from(instance, threads=True):
    """Same algorithm as kombu.common.oid_from/generate_oid, fixed inputs."""
    ent = '{:x}-{:x}-{:x}-{:x}'.format(
        FIXED_NODE_ID, PROCESS['pid'],
        FIXED_THREAD_ID if threads else 0,
        APP_INSTANCE_IDS.get(getattr(instance, 'main', None), 0x1))
    return str(uuid3(NAMESPACE_OID, ent))


def fixed_anon_nodename(hostname=None, prefix='gen'):
    return nodename(''.join([prefix, str(PROCESS['pid'])]),
                    hostname or PROCESS['host'])


def install_determinism_hooks():
    real_uuid = sys.modules['kombu.utils.uuid'].uuid
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == 'celery' or name.startswith('celery.')
                               or name == 'kombu' or name.startswith('kombu.')):
            continue
        if getattr(mod, 'datetime', None) is _real_datetime:
            mod.datetime = FrozenDatetime
        if getattr(mod, 'uuid', None) is real_uuid:
            mod.uuid = UUIDS
    celery.app.base.oid_from = fixed_oid_from
    celery.app.amqp.anon_nodename = fixed_anon_nodename


# --------------------------------------------------------------------------
# Fake RabbitMQ below py-amqp
# --------------------------------------------------------------------------

METHODS = {
    (10, 10): 'connection.start', (10, 11): 'connection.start-ok',
    (10, 30): 'connection.tune', (10, 31): 'connection.tune-ok',
    (10, 40): 'connection.open', (10, 41): 'connection.open-ok',
    (10, 50): 'connection.close', (10, 51): 'connection.close-ok',
    (20, 10): 'channel.open', (20, 11): 'channel.open-ok',
    (20, 40): 'channel.close', (20, 41): 'channel.close-ok',
    (40, 10): 'exchange.declare', (40, 11): 'exchange.declare-ok',
    (50, 10): 'queue.declare', (50, 11): 'queue.declare-ok',
    (50, 20): 'queue.bind', (50, 21): 'queue.bind-ok',
    (60, 10): 'basic.qos', (60, 11): 'basic.qos-ok',
    (60, 20): 'basic.consume', (60, 21): 'basic.consume-ok',
    (60, 40): 'basic.publish',
    (60, 70): 'basic.get', (60, 71): 'basic.get-ok', (60, 72): 'basic.get-empty',
    (60, 80): 'basic.ack', (60, 90): 'basic.reject',
    (85, 10): 'confirm.select', (85, 11): 'confirm.select-ok',
}

#: Argument signatures (py-amqp notation) and names of client->server methods.
CLIENT_ARGS = {
    (10, 11): ('FsSs', ['client_properties', 'mechanism', 'response', 'locale']),
    (10, 31): ('BlB', ['channel_max', 'frame_max', 'heartbeat']),
    (10, 40): ('ssb', ['virtual_host', 'capabilities', 'insist']),
    (10, 50): ('BsBB', ['reply_code', 'reply_text', 'class_id', 'method_id']),
    (10, 51): ('', []),
    (20, 10): ('s', ['reserved']),
    (20, 40): ('BsBB', ['reply_code', 'reply_text', 'class_id', 'method_id']),
    (20, 41): ('', []),
    (40, 10): ('BssbbbbbF', ['reserved', 'exchange', 'type', 'passive',
                             'durable', 'auto_delete', 'internal', 'nowait',
                             'arguments']),
    (50, 10): ('BsbbbbbF', ['reserved', 'queue', 'passive', 'durable',
                            'exclusive', 'auto_delete', 'nowait', 'arguments']),
    (50, 20): ('BsssbF', ['reserved', 'queue', 'exchange', 'routing_key',
                          'nowait', 'arguments']),
    (60, 10): ('lBb', ['prefetch_size', 'prefetch_count', 'global']),
    (60, 20): ('BssbbbbF', ['reserved', 'queue', 'consumer_tag', 'no_local',
                            'no_ack', 'exclusive', 'nowait', 'arguments']),
    (60, 40): ('Bssbb', ['reserved', 'exchange', 'routing_key', 'mandatory',
                         'immediate']),
    (60, 70): ('Bsb', ['reserved', 'queue', 'no_ack']),
    (60, 80): ('Lb', ['delivery_tag', 'multiple']),
    (60, 90): ('Lb', ['delivery_tag', 'requeue']),
    (85, 10): ('b', ['nowait']),
}

SERVER_PROPERTIES = {
    'capabilities': {
        'publisher_confirms': True,
        'exchange_exchange_bindings': True,
        'basic.nack': True,
        'consumer_cancel_notify': True,
        'connection.blocked': True,
        'consumer_priorities': True,
        'authentication_failure_close': True,
        'per_consumer_qos': True,
        'direct_reply_to': True,
    },
    'cluster_name': 'rabbit@golden',
    'platform': 'Erlang/OTP 26',
    'product': 'RabbitMQ',
    'version': '3.12.13',
}


def _frame(ftype, channel, payload):
    return struct.pack('>BHI', ftype, channel, len(payload)) + payload + b'\xce'


def _method_frame(channel, sig, fmt='', args=()):
    payload = struct.pack('>HH', *sig) + (amqp_ser.dumps(fmt, list(args))
                                          if fmt else b'')
    return _frame(1, channel, payload)


class FakeBroker:
    """Minimal AMQP 0-9-1 server good enough for py-amqp/kombu/celery."""

    FRAME_MAX = 131072

    def __init__(self):
        self.reset()

    def reset(self):
        self.events = []        # every client->server method, in order
        self.queues = {}        # name -> deque of stored messages
        self.bindings = []      # (exchange, routing_key, queue)
        self.exchanges = {}     # name -> type
        self.conn_counter = 0

    # -- per connection state lives on the transport object ---------------
    def attach(self, tr):
        self.conn_counter += 1
        tr.conn_id = self.conn_counter
        tr.rx = bytearray()
        tr.got_protocol_header = False
        tr.pending = {}          # channel -> publish being assembled
        tr.delivery_tags = {}    # channel -> last delivery tag

    def feed(self, tr, data):
        tr.rx += data
        if not tr.got_protocol_header:
            if len(tr.rx) < 8:
                return
            header, tr.rx[:8] = bytes(tr.rx[:8]), b''
            if header != amqp_transport.AMQP_PROTOCOL_HEADER:
                raise AssertionError(f'bad protocol header {header!r}')
            tr.got_protocol_header = True
            tr.inbuf += _method_frame(0, (10, 10), 'ooFSS', (
                0, 9, SERVER_PROPERTIES, 'AMQPLAIN PLAIN', 'en_US'))
        while len(tr.rx) >= 7:
            ftype, channel, size = struct.unpack_from('>BHI', tr.rx, 0)
            if len(tr.rx) < 7 + size + 1:
                return
            raw = bytes(tr.rx[:8 + size])
            del tr.rx[:8 + size]
            if raw[-1] != 0xce:
                raise AssertionError('bad frame end')
            payload = raw[7:-1]
            if ftype == 1:
                self._on_method(tr, channel, payload, raw)
            elif ftype == 2:
                self._on_content_header(tr, channel, payload, raw)
            elif ftype == 3:
                self._on_body(tr, channel, payload, raw)
            elif ftype == 8:
                pass  # heartbeat
            else:
                raise AssertionError(f'unexpected frame type {ftype}')

    def _on_method(self, tr, channel, payload, raw):
        sig = struct.unpack_from('>HH', payload, 0)
        name = METHODS.get(sig, f'{sig[0]}.{sig[1]}')
        fmt, names = CLIENT_ARGS[sig]
        args_bytes = payload[4:]
        values = amqp_ser.loads(fmt, args_bytes, 0)[0] if fmt else []
        ev = {
            'conn': tr.conn_id, 'channel': channel, 'method': name,
            'sig': sig, 'args': dict(zip(names, values)),
            'args_bytes': args_bytes, 'method_frame': raw,
        }
        self.events.append(ev)
        a = ev['args']
        out = tr.inbuf
        if sig == (10, 11):
            out += _method_frame(0, (10, 30), 'BlB', (2047, self.FRAME_MAX, 60))
        elif sig == (10, 31):
            pass
        elif sig == (10, 40):
            out += _method_frame(0, (10, 41), 's', ('',))
        elif sig == (10, 50):
            out += _method_frame(0, (10, 51))
        elif sig == (20, 10):
            out += _method_frame(channel, (20, 11), 'S', ('',))
        elif sig == (20, 40):
            out += _method_frame(channel, (20, 41))
        elif sig == (40, 10):
            self.exchanges[a['exchange']] = a['type']
            if not a['nowait']:
                out += _method_frame(channel, (40, 11))
        elif sig == (50, 10):
            self.queues.setdefault(a['queue'], deque())
            if not a['nowait']:
                out += _method_frame(channel, (50, 11), 'sll', (
                    a['queue'], len(self.queues[a['queue']]), 0))
        elif sig == (50, 20):
            self.bindings.append((a['exchange'], a['routing_key'], a['queue']))
            if not a['nowait']:
                out += _method_frame(channel, (50, 21))
        elif sig == (60, 10):
            out += _method_frame(channel, (60, 11))
        elif sig == (60, 20):
            out += _method_frame(channel, (60, 21), 's',
                                 (a['consumer_tag'] or 'amq.ctag-golden',))
        elif sig == (60, 40):
            ev.update(content_header_frame=None, body=b'', body_frames=[],
                      body_size=None)
            tr.pending[channel] = ev
        elif sig == (60, 70):
            q = self.queues.get(a['queue'])
            if not q:
                out += _method_frame(channel, (60, 72), 's', ('',))
            else:
                msg = q.popleft()
                tag = tr.delivery_tags.get(channel, 0) + 1
                tr.delivery_tags[channel] = tag
                out += _method_frame(channel, (60, 71), 'Lbssl', (
                    tag, False, msg['exchange'], msg['routing_key'], len(q)))
                out += _frame(2, channel, msg['content_header_payload'])
                body = msg['body']
                step = self.FRAME_MAX - 8
                for i in range(0, len(body), step):
                    out += _frame(3, channel, body[i:i + step])
        elif sig in ((60, 80), (60, 90), (85, 10)):
            if sig == (85, 10) and not a['nowait']:
                out += _method_frame(channel, (85, 11))
        else:
            raise AssertionError(f'unhandled method {name}')

    def _on_content_header(self, tr, channel, payload, raw):
        ev = tr.pending[channel]
        class_id, weight, body_size = struct.unpack_from('>HHQ', payload, 0)
        ev['content_header_frame'] = raw
        ev['content_header_payload'] = payload
        ev['body_size'] = body_size
        if body_size == 0:
            self._complete(tr, channel)

    def _on_body(self, tr, channel, payload, raw):
        ev = tr.pending[channel]
        ev['body'] += payload
        ev['body_frames'].append(raw)
        if len(ev['body']) >= ev['body_size']:
            self._complete(tr, channel)

    def _complete(self, tr, channel):
        ev = tr.pending.pop(channel)
        ex, rk = ev['args']['exchange'], ev['args']['routing_key']
        msg = {'exchange': ex, 'routing_key': rk, 'body': ev['body'],
               'content_header_payload': ev['content_header_payload']}
        if ex == '':
            targets = [rk] if rk in self.queues else []
        else:
            targets = [q for (e, k, q) in self.bindings
                       if e == ex and (k == rk or
                                       self.exchanges.get(e) == 'fanout')]
        for q in targets:
            self.queues[q].append(dict(msg))
        ev['routed_to'] = targets


BROKER = FakeBroker()


class FakeTransport(amqp_transport._AbstractTransport):
    """py-amqp transport whose peer is FakeBroker instead of a socket."""

    def __init__(self, host, connect_timeout=None, ssl=False, **kwargs):
        super().__init__(host, connect_timeout=connect_timeout, **kwargs)
        self.inbuf = bytearray()

    def _connect(self, host, port, timeout):
        self.sock = None
        BROKER.attach(self)

    def _init_socket(self, socket_settings, read_timeout, write_timeout):
        self._write(amqp_transport.AMQP_PROTOCOL_HEADER)

    @contextlib.contextmanager
    def having_timeout(self, timeout):
        yield None

    def _read(self, n, initial=False):
        if len(self.inbuf) < n:
            raise socket.timeout('fake broker: nothing to read')
        data = bytes(self.inbuf[:n])
        del self.inbuf[:n]
        return data

    def _write(self, s):
        BROKER.feed(self, bytes(s))

    def close(self):
        self.connected = False


def _fake_transport_factory(self, host, connect_timeout, ssl=False,
                            read_timeout=None, write_timeout=None,
                            socket_settings=None, **kwargs):
    return FakeTransport(host, connect_timeout=connect_timeout, ssl=ssl,
                         read_timeout=read_timeout,
                         write_timeout=write_timeout,
                         socket_settings=socket_settings, **kwargs)


AmqpConnection.Transport = _fake_transport_factory

# --------------------------------------------------------------------------
# Decoding helpers (py-amqp's own decoder/encoder)
# --------------------------------------------------------------------------


def _describe_item(buf, offset):
    """Return (type description, new offset) for the field value at offset."""
    tag = chr(buf[offset])
    if tag == 'F':
        (length,) = struct.unpack_from('>I', buf, offset + 1)
        inner = _describe_table(buf[offset + 1:offset + 5 + length])
        return {'F': inner}, offset + 5 + length
    if tag == 'A':
        (length,) = struct.unpack_from('>I', buf, offset + 1)
        end = offset + 5 + length
        pos, items = offset + 5, []
        while pos < end:
            d, pos = _describe_item(buf, pos)
            items.append(d)
        return {'A': items}, end
    _, new = amqp_ser._read_item(buf, offset)
    return tag, new


def _describe_table(table_bytes):
    """Map key -> py-amqp field type tag for a table incl. length prefix."""
    (length,) = struct.unpack_from('>I', table_bytes, 0)
    pos, end, out = 4, 4 + length, {}
    while pos < end:
        klen = table_bytes[pos]
        key = table_bytes[pos + 1:pos + 1 + klen].decode('utf-8')
        pos += 1 + klen
        out[key], pos = _describe_item(table_bytes, pos)
    return out


def _headers_table_slice(props_block):
    """Slice the application-headers table (with length) out of a props block."""
    (flags,) = struct.unpack_from('>H', props_block, 0)
    if flags & 0x0001:
        raise AssertionError('continuation property flags not expected')
    pos = 2
    for bit in (0x8000, 0x4000):  # content_type, content_encoding: shortstr
        if flags & bit:
            pos += 1 + props_block[pos]
    if not flags & 0x2000:
        return None
    (length,) = struct.unpack_from('>I', props_block, pos)
    return props_block[pos:pos + 4 + length]


def jsonable(v):
    if isinstance(v, _real_datetime):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.decode('utf-8', 'surrogateescape')
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


def publish_record(ev):
    """Build the golden JSON object for one recorded basic.publish."""
    hdr_payload = ev['content_header_payload']
    class_id, weight, body_size = struct.unpack_from('>HHQ', hdr_payload, 0)
    props_block = hdr_payload[12:]
    props, end = amqp_ser.decode_properties_basic(props_block, 0)
    assert end == len(props_block), 'trailing bytes in properties block'
    headers = props.pop('application_headers', None)
    table = _headers_table_slice(props_block)
    if table is not None:
        # Cross-check: py-amqp's own encoder reproduces the wire bytes.
        assert amqp_ser.dumps('F', [headers]) == table, 'table re-encode mismatch'
        # ... and so does GenericContent._serialize_properties().
        m = amqp.Message(**dict(props, application_headers=headers))
        assert m._serialize_properties() == props_block, 'props re-encode'
    body = ev['body']
    try:
        body_text = body.decode('utf-8')
    except UnicodeDecodeError:
        body_text = None
    try:
        body_json = json.loads(body_text) if body_text is not None else None
    except ValueError:
        body_json = None
    rec = {
        'exchange': ev['args']['exchange'],
        'routing_key': ev['args']['routing_key'],
        'mandatory': ev['args']['mandatory'],
        'immediate': ev['args']['immediate'],
        'routed_to_queues': ev['routed_to'],
        'properties': props,
        'property_flags': '0x%04x' % struct.unpack_from('>H', props_block)[0],
        'headers': jsonable(headers) if headers is not None else None,
        'header_order': list(headers) if headers is not None else [],
        'header_types': _describe_table(table) if table is not None else {},
        'headers_table_hex': table.hex() if table is not None else None,
        'content_header_hex': props_block.hex(),
        'content_header_frame_payload_hex': hdr_payload.hex(),
        'basic_publish_args_hex': ev['args_bytes'].hex(),
        'wire_frames_hex': (ev['method_frame'] + ev['content_header_frame']
                            + b''.join(ev['body_frames'])).hex(),
        'body_size': body_size,
        'body_hex': body.hex(),
        'body_text': body_text,
        'body_json': body_json,
    }
    assert len(body) == body_size
    return rec


def declare_record(ev):
    rec = {'method': ev['method'], 'channel': ev['channel']}
    args = dict(ev['args'])
    args.pop('reserved', None)
    rec['params'] = jsonable(args)
    rec['method_args_hex'] = ev['args_bytes'].hex()
    if 'arguments' in ev['args']:
        # The 'F' field table is the last argument of these methods.
        fmt = CLIENT_ARGS[ev['sig']][0]
        assert fmt.endswith('F')
        prefix = amqp_ser.dumps(fmt[:-1], [ev['args'][n] for n in
                                           CLIENT_ARGS[ev['sig']][1][:-1]])
        table = ev['args_bytes'][len(prefix):]
        assert amqp_ser.dumps('F', [ev['args']['arguments']]) == table
        rec['arguments_table_hex'] = table.hex()
        rec['arguments_types'] = _describe_table(table)
    rec['method_frame_hex'] = ev['method_frame'].hex()
    return rec


DECLARE_METHODS = ('exchange.declare', 'queue.declare', 'queue.bind')


def publishes(since=0):
    return [e for e in BROKER.events[since:] if e['method'] == 'basic.publish']


def method_summary(evs):
    out = []
    for e in evs:
        a = e['args']
        if e['method'] == 'exchange.declare':
            out.append(f"exchange.declare {a['exchange']!r} type={a['type']}")
        elif e['method'] == 'queue.declare':
            out.append(f"queue.declare {a['queue']!r}")
        elif e['method'] == 'queue.bind':
            out.append(f"queue.bind {a['queue']!r} <- {a['exchange']!r} "
                       f"key={a['routing_key']!r}")
        elif e['method'] == 'basic.publish':
            out.append(f"basic.publish exchange={a['exchange']!r} "
                       f"routing_key={a['routing_key']!r}")
        elif e['method'] in ('basic.get', 'basic.ack', 'basic.reject'):
            out.append(f"{e['method']} " + ' '.join(
                f'{k}={v!r}' for k, v in a.items() if k != 'reserved'))
    return out


# --------------------------------------------------------------------------
# Apps, worker emulation
# --------------------------------------------------------------------------

BROKER_URL = 'amqp://guest@localhost//'


def start_case():
    kombu.pools.reset()
    BROKER.reset()
    UUIDS.reset()
    PROCESS.update(CLIENT_PROCESS)
    _set_task_join_will_block(False)


def client_app():
    """The app from the brief: Celery('bff', broker=..., backend='rpc://')."""
    return Celery('bff', broker=BROKER_URL, backend='rpc://')


WORKER_TASKS_FILENAME = 'orchestrator_worker/tasks.py'
WORKER_TASKS_SRC = '''\
def register(app):
    @app.task(bind=True, name='orchestrator.tasks.execute_crawl_task',
              shared=False)
    def execute_crawl_task(self, crawl_task_id):
        mode = app.conf.golden_mode
        if mode == 'success':
            return {'pages': 3}
        if mode == 'failure':
            raise ValueError('boom', 2)
        if mode == 'retry':
            raise self.retry(countdown=30)
        if mode == 'retry_exc':
            raise self.retry(exc=ConnectionError('db down'), countdown=30)
        raise AssertionError(mode)

    return execute_crawl_task
'''


def worker_app(mode):
    """A Python worker process: its own app, tasks from a fixed 'file'."""
    app = Celery('orchestrator-worker', broker=BROKER_URL, backend='rpc://')
    app.conf.golden_mode = mode
    lines = WORKER_TASKS_SRC.splitlines(True)
    linecache.cache[WORKER_TASKS_FILENAME] = (
        len(WORKER_TASKS_SRC), None, lines, WORKER_TASKS_FILENAME)
    ns = {}
    exec(compile(WORKER_TASKS_SRC, WORKER_TASKS_FILENAME, 'exec'), ns)
    ns['register'](app)
    return app


def run_worker_once(app, queue='celery'):
    """Receive one message from `queue` and process it like a worker would.

    Uses the real worker Consumer task handler (on_task_received -> strategy
    -> Request) and the solo pool (Request.execute_using_pool ->
    trace_task_ret in-process).  task_join_will_block is set like in a
    prefork pool child.  The message is fetched with basic.get (a real
    worker uses basic.consume; the message bytes are identical).
    """
    from celery.concurrency.solo import TaskPool
    from celery.worker import state as worker_state
    from celery.worker.consumer.consumer import Consumer

    kombu.pools.reset()          # a different process: no shared pools
    PROCESS.update(WORKER_PROCESS)
    _set_task_join_will_block(True)
    app.finalize(auto=True)
    pool = TaskPool()

    def on_task_request(req):     # WorkController._process_task
        req.execute_using_pool(pool)

    timer = types.SimpleNamespace(call_at=None)
    consumer = Consumer(on_task_request, hostname=WORKER_HOSTNAME, pool=pool,
                        app=app, timer=timer,
                        controller=types.SimpleNamespace(
                            state=worker_state, use_eventloop=False))
    consumer.update_strategies()
    handler = consumer.create_task_handler()
    conn = app.connection_for_read()
    channel = conn.default_channel
    message = app.amqp.queues[queue](channel).get(
        no_ack=False, accept=app.conf.accept_content)
    assert message is not None, 'no message in queue'
    handler(message)
    consumer.perform_pending_operations()
    conn.release()
    PROCESS.update(CLIENT_PROCESS)
    _set_task_join_will_block(False)
    return message


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------

ID_CRAWL = '2f9f7d0e-6a8e-4c55-9a8e-0c1d2f3a4b5c'
ID_SITE = '6b1f3c2a-8d4e-4f5a-9b6c-7d8e9f0a1b2c'
ID_SITE_UTF8 = '6b1f3c2a-8d4e-4f5a-9b6c-7d8e9f0a1b2d'
ID_COUNTDOWN = '3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f'
ID_HEADERS = '4d5e6f70-8192-4a3b-9c4d-5e6f708192a3'
ID_TIMELIMIT = '5e6f7081-92a3-4b4c-8d5e-6f708192a3b4'
ID_SHADOW = '6f708192-a3b4-4c5d-9e6f-708192a3b4c5'
ID_LINK = '708192a3-b4c5-4d6e-8f70-8192a3b4c5d6'
ID_CHAIN_LAST = '8192a3b4-c5d6-4e7f-9081-92a3b4c5d6e7'
ID_RETRY = '92a3b4c5-d6e7-4f80-8192-a3b4c5d6e7f8'
ID_RETRY_EXC = '92a3b4c5-d6e7-4f80-8192-a3b4c5d6e7f9'
ID_V1 = 'a3b4c5d6-e7f8-4091-92a3-b4c5d6e7f809'
ID_EXTRACT = 'b4c5d6e7-f809-41a2-a3b4-c5d6e7f8091a'
ID_SUCCESS = 'c5d6e7f8-091a-42b3-b4c5-d6e7f8091a2b'
ID_FAILURE = 'd6e7f809-1a2b-43c4-85d6-e7f8091a2b3c'
ID_UNKNOWN = 'e7f8091a-2b3c-44d5-96e7-f8091a2b3c4d'

CALL_HEADER = (
    "app = Celery('bff', broker='amqp://guest@localhost//', "
    "backend='rpc://')")


class Case:
    def __init__(self, name, description, notes=None):
        self.name = name
        self.description = description
        self.notes = notes or []


def client_eval(app, code, extra_ns=None):
    ns = {'app': app, 'chain': chain}
    ns.update(extra_ns or {})
    return eval(code, ns)


def simple_send_case(name, code, notes=None, setup=None):
    start_case()
    app = client_app()
    if setup:
        exec(setup, {'app': app})
    n0 = len(BROKER.events)
    client_eval(app, code)
    evs = BROKER.events[n0:]
    pubs = [e for e in evs if e['method'] == 'basic.publish']
    assert len(pubs) == 1, (name, len(pubs))
    desc = CALL_HEADER + '\n' + (setup + '\n' if setup else '') + code
    return name, desc, notes or [], pubs[0], evs


def output_case(results, name, desc, notes, ev, evs, extra=None):
    rec = {'case': name, 'description': desc}
    if notes:
        rec['notes'] = notes
    rec.update(publish_record(ev))
    idx = evs.index(ev)
    rec['amqp_methods_before_publish_on_connection'] = method_summary(
        [e for e in evs[:idx] if e['conn'] == ev['conn']])
    if extra:
        rec.update(extra)
    results[name] = rec


def build_all():
    results = {}
    extras = {}

    # 1 -------------------------------------------------------------------
    r = simple_send_case(
        'send_task_execute_crawl_task',
        f"app.send_task('orchestrator.tasks.execute_crawl_task', args=[42], "
        f"task_id='{ID_CRAWL}')",
        notes=['Celery 5.2.6 client defaults; origin/reply_to pinned (see '
               'README).'])
    output_case(results, *r)
    extras['topology_celery'] = [declare_record(e) for e in r[4]
                                 if e['method'] in DECLARE_METHODS]
    reply_decl = [e for e in r[4] if e['method'] == 'queue.declare'
                  and e['args']['queue'] == results[r[0]]['properties']
                  .get('reply_to')]
    assert len(reply_decl) == 1
    extras['reply_queue_declare'] = (r[1], reply_decl[0], r[4])

    # 2 / 2b --------------------------------------------------------------
    output_case(results, *simple_send_case(
        'send_task_trigger_site_analysis',
        f"app.send_task('orchestrator.tasks.trigger_site_analysis', "
        f"args=[7, 'pricing'], task_id='{ID_SITE}')"))
    output_case(results, *simple_send_case(
        'send_task_trigger_site_analysis_utf8',
        f"app.send_task('orchestrator.tasks.trigger_site_analysis', "
        f"args=[7, 'prix-\u00e9t\u00e9'], task_id='{ID_SITE_UTF8}')",
        notes=['Non-ASCII theme: the JSON body escapes it (kombu json uses '
               'ensure_ascii) while the argsrepr header carries raw UTF-8.']))

    # 3 -------------------------------------------------------------------
    output_case(results, *simple_send_case(
        'kwargs_countdown_expires_priority',
        f"app.send_task('orchestrator.tasks.execute_crawl_task', "
        f"kwargs={{'task_id': 42}}, countdown=10, expires=60, priority=5, "
        f"task_id='{ID_COUNTDOWN}')",
        notes=[f'Clock frozen at {FROZEN_NOW_UTC.isoformat()} UTC '
               '(datetime.utcnow() used by app.now()).',
               'eta = now + 10 s, expires header = now + 60 s, '
               'AMQP expiration property = "60000" (ms, string).']))

    # 4 -------------------------------------------------------------------
    output_case(results, *simple_send_case(
        'custom_headers',
        f"app.send_task('orchestrator.tasks.execute_crawl_task', args=[42], "
        f"task_id='{ID_HEADERS}', headers={{'x_custom': 'v', "
        f"'periodic_task_name': 'nightly', 'n': 3, 'big': 2**40, 'neg': -5, "
        f"'flag': True, 'none': None, 'f': 1.5, 'lst': [1, 'a'], "
        f"'map': {{'k': 'v'}}}})",
        notes=['Custom headers are merged at top level after the Celery '
               'headers (dict.update order). See header_types for the py-amqp '
               'field type used for each value.']))

    # 5 -------------------------------------------------------------------
    output_case(results, *simple_send_case(
        'time_limits',
        f"app.send_task('orchestrator.tasks.execute_crawl_task', args=[42], "
        f"task_id='{ID_TIMELIMIT}', time_limit=30, soft_time_limit=20)",
        notes=['timelimit header is [hard, soft] = [30, 20].']))

    # 6 -------------------------------------------------------------------
    output_case(results, *simple_send_case(
        'shadow_and_ignore_result',
        f"app.send_task('orchestrator.tasks.execute_crawl_task', args=[42], "
        f"task_id='{ID_SHADOW}', shadow='nice-name', ignore_result=True)",
        notes=['ignore_result=True: the rpc reply queue is NOT declared '
               '(backend.on_task_call skipped) but reply_to is still set.']))

    # 7 -------------------------------------------------------------------
    output_case(results, *simple_send_case(
        'link_and_link_error',
        f"app.send_task('orchestrator.tasks.execute_crawl_task', args=[42], "
        f"task_id='{ID_LINK}', "
        f"link=app.signature('orchestrator.tasks.noop'), "
        f"link_error=app.signature('orchestrator.tasks.on_crawl_error', "
        f"args=['x']))",
        notes=['Signatures are embedded unfrozen (no task_id in options).']))
    output_case(results, *simple_send_case(
        'chain_first_message',
        f"chain(app.signature('a', args=[1]), app.signature('b'), "
        f"app.signature('c')).apply_async(task_id='{ID_CHAIN_LAST}')",
        notes=['Only the first task (a) is published; the rest travels in '
               'embed.chain in REVERSE order (next task last).',
               'task_id= of apply_async names the LAST task (c); ids of a and '
               'b come from uuid() (deterministic counter here).']))

    # 8 + 11 (RETRY) -------------------------------------------------------
    for mode, tid, suffix in (('retry', ID_RETRY, ''),
                              ('retry_exc', ID_RETRY_EXC, '_with_exc')):
        start_case()
        app = client_app()
        code = (f"app.send_task('orchestrator.tasks.execute_crawl_task', "
                f"args=[42], task_id='{tid}', "
                f"headers={{'periodic_task_name': 'nightly'}}, priority=3)")
        client_eval(app, code)
        n0 = len(BROKER.events)
        worker = worker_app(mode)
        run_worker_once(worker)
        wevs = BROKER.events[n0:]
        orig = publishes()[0]
        wpubs = [e for e in wevs if e['method'] == 'basic.publish']
        assert len(wpubs) == 2, [e['method'] for e in wevs]
        republish = [e for e in wpubs if e['content_header_payload'] and
                     e['args']['routing_key'] == 'celery'][0]
        rpc = [e for e in wpubs if e is not republish][0]
        retry_call = ('raise self.retry(countdown=30)' if mode == 'retry' else
                      "raise self.retry(exc=ConnectionError('db down'), "
                      "countdown=30)")
        worker_desc = (
            'Python worker (Celery 5.2.6, solo pool emulation, prefork-like '
            'task_join_will_block=True) receives the message of case '
            f'retry_original{suffix} and runs\n'
            f"@app.task(bind=True, name='orchestrator.tasks.execute_crawl_task')"
            f"\ndef execute_crawl_task(self, crawl_task_id):\n    {retry_call}\n"
            f'with the clock frozen at {FROZEN_NOW_UTC.isoformat()} UTC.')
        all_evs = BROKER.events
        # Facts stated in the notes; fail loudly if they ever change.
        rh = publish_record(republish)['headers']
        rp = publish_record(republish)['properties']
        assert rh['id'] == tid and rh['retries'] == 1, rh
        assert rh['eta'] == '2025-01-15T10:30:30.123456+00:00', rh['eta']
        assert rh['parent_id'] == tid and rh['root_id'] == tid, rh
        assert 'periodic_task_name' not in rh, rh
        assert rp['priority'] == 3 and rp['correlation_id'] == tid, rp
        output_case(results, f'retry_original{suffix}',
                    CALL_HEADER + '\n' + code,
                    ['The message later consumed by the worker in case '
                     f'retry_republish{suffix}.'], orig, all_evs)
        output_case(results, f'retry_republish{suffix}',
                    worker_desc + '\nThis is the task message Task.retry '
                    'publishes (signature_from_request -> apply_async).',
                    ['Same id/correlation_id, retries=1, eta = frozen now + '
                     '30 s, root_id kept, parent_id = the task\'s OWN id '
                     '(send_task fills it from current_worker_task), argsrepr '
                     're-computed from the tuple "(42,)", origin = the '
                     'worker\'s anon nodename, priority of the delivery '
                     'reused (3), reply_to copied, routed to the queue it was '
                     'delivered from (default exchange, key "celery").',
                     'Celery 5.2.6 DROPS custom headers on retry: the '
                     'original\'s periodic_task_name header is absent '
                     '(Context.headers is never filled from the message).'],
                    republish, all_evs,
                    extra={'worker_amqp_methods': method_summary(wevs)})
        output_case(results, f'rpc_retry{suffix}',
                    worker_desc + '\nThis is the rpc:// RETRY state message '
                    '(trace handle_retry -> backend.mark_as_retry -> '
                    'RPCBackend.store_result).',
                    ['Published after the retry task message and before '
                     'the basic.ack of the original delivery.',
                     'children lists the retried task itself: '
                     '[[[<id>, null], null]] (the retry AsyncResult is added '
                     'to the running task\'s children by send_task).',
                     'rpc result messages carry no reply_to and an EMPTY '
                     'headers table (flag 0x2000 set, 00000000).'],
                    rpc, all_evs,
                    extra={'worker_amqp_methods': method_summary(wevs)})

    # 9 -------------------------------------------------------------------
    output_case(results, *simple_send_case(
        'protocol_v1',
        f"app.send_task('orchestrator.tasks.execute_crawl_task', args=[42], "
        f"kwargs={{'depth': 2}}, task_id='{ID_V1}')",
        setup='app.conf.task_protocol = 1',
        notes=['Protocol 1: empty header table, everything in a JSON object '
               'body.']))

    # 10 ------------------------------------------------------------------
    r = simple_send_case(
        'extract_task',
        f"app.send_task('extractor.tasks.extract', args=[5], "
        f"kwargs={{'run_id': 9, 'crawl_task_id': 42, 'data_source_id': 3}}, "
        f"queue='extraction_queue', task_id='{ID_EXTRACT}')",
        notes=['queue= given: Celery auto-creates queue/exchange/routing key '
               "'extraction_queue' and publishes to the default exchange."])
    output_case(results, *r)
    extras['topology_extraction'] = [declare_record(e) for e in r[4]
                                     if e['method'] in DECLARE_METHODS]

    # 11 SUCCESS / FAILURE / NotRegistered ---------------------------------
    for mode, tid, name, task in (
            ('success', ID_SUCCESS, 'rpc_success',
             'orchestrator.tasks.execute_crawl_task'),
            ('failure', ID_FAILURE, 'rpc_failure',
             'orchestrator.tasks.execute_crawl_task'),
            ('unknown', ID_UNKNOWN, 'rpc_not_registered',
             'orchestrator.tasks.unknown_task')):
        start_case()
        app = client_app()
        code = (f"app.send_task('{task}', args=[42], task_id='{tid}')")
        client_eval(app, code)
        n0 = len(BROKER.events)
        worker = worker_app(mode)
        run_worker_once(worker)
        wevs = BROKER.events[n0:]
        wpubs = [e for e in wevs if e['method'] == 'basic.publish']
        assert len(wpubs) == 1, (mode, [(e['method'], e['args'].get('routing_key'), e.get('body')) for e in wevs])
        body_desc = {
            'success': 'return {"pages": 3}',
            'failure': "raise ValueError('boom', 2)",
            'unknown': None,
        }[mode]
        if body_desc:
            desc = (
                f'Client: {CALL_HEADER}; {code}\n'
                'Python worker (Celery 5.2.6, solo pool emulation) runs\n'
                "@app.task(bind=True, name='orchestrator.tasks."
                "execute_crawl_task')\ndef execute_crawl_task(self, "
                f"crawl_task_id):\n    {body_desc}\n"
                'and the rpc:// backend publishes the state '
                '(trace -> backend.mark_as_done / mark_as_failure -> '
                'RPCBackend.store_result).')
        else:
            desc = (
                f'Client: {CALL_HEADER}; {code}\n'
                'Python worker (Celery 5.2.6) without that task: '
                'Consumer.on_task_received -> on_unknown_task -> '
                'basic.reject(requeue=False) + '
                'backend.mark_as_failure(id, NotRegistered(name)).')
        rpc_notes = ['rpc result messages carry no reply_to and an EMPTY '
                     'headers table (flag 0x2000 set, 00000000); '
                     'delivery_mode=1; correlation_id = task id.']
        if mode == 'failure':
            rpc_notes.append('Traceback text comes from the real worker '
                             'trace; the task code file name is pinned to '
                             f'{WORKER_TASKS_FILENAME!r}.')
        if mode == 'unknown':
            rpc_notes.append('The worker rejects the task message '
                             '(requeue=False) BEFORE publishing the FAILURE; '
                             'traceback is null.')
        output_case(results, name, desc, rpc_notes,
                    wpubs[0], BROKER.events,
                    extra={'worker_amqp_methods': method_summary(wevs)})

    return results, extras


def build_topology(extras):
    return {
        'description': (
            'AMQP declarations kombu/celery made on the client connection '
            'before publishing, in order. "send_task_default_queue": case '
            'send_task_execute_crawl_task (queue celery + the rpc reply '
            'queue); "send_task_queue_extraction_queue": case extract_task '
            '(queue=\'extraction_queue\' + the rpc reply queue). '
            'method_args_hex = method arguments (after class/method id); '
            'arguments_table_hex = the arguments field table incl. its '
            '4-byte length prefix.'),
        'send_task_default_queue': extras['topology_celery'],
        'send_task_queue_extraction_queue': extras['topology_extraction'],
    }


def build_reply_queue_declare(extras):
    desc, ev, evs = extras['reply_queue_declare']
    rec = {
        'case': 'reply_queue_declare',
        'description': desc + '\n(rpc:// backend on_task_call declares the '
        'reply queue before the task is published)',
        'notes': ['queue name = client oid = reply_to of the task messages; '
                  'not bound to any exchange (default exchange only); '
                  'x-expires = result_expires (1 day) in ms.'],
    }
    rec.update(declare_record(ev))
    return rec


def versions():
    return {
        'celery': celery.__version__,
        'kombu': kombu.__version__,
        'amqp': amqp.__version__,
        'python': '%d.%d.%d' % sys.version_info[:3],
        'frozen_now_utc': FROZEN_NOW_UTC.isoformat(),
        'client_process': dict(CLIENT_PROCESS),
        'worker_process': dict(WORKER_PROCESS),
        'worker_hostname': WORKER_HOSTNAME,
    }


def write_json(path, obj):
    data = json.dumps(obj, indent=2, ensure_ascii=False) + '\n'
    with open(path, 'w', encoding='utf-8', newline='\n') as f:
        f.write(data)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default=OUT_DIR, help='output directory')
    ap.add_argument('--allow-other-versions', action='store_true')
    opts = ap.parse_args(argv)
    got = {'celery': celery.__version__, 'kombu': kombu.__version__,
           'amqp': amqp.__version__}
    if got != EXPECTED_VERSIONS and not opts.allow_other_versions:
        sys.exit(f'expected {EXPECTED_VERSIONS}, got {got}; run with '
                 '/usr/bin/python3 or pass --allow-other-versions')
    install_determinism_hooks()
    results, extras = build_all()
    os.makedirs(opts.out, exist_ok=True)
    manifest = {'messages': [], 'other': ['topology.json',
                                          'reply_queue_declare.json',
                                          'versions.json']}
    for name, rec in results.items():
        write_json(os.path.join(opts.out, f'{name}.json'), rec)
        manifest['messages'].append(f'{name}.json')
    write_json(os.path.join(opts.out, 'topology.json'), build_topology(extras))
    write_json(os.path.join(opts.out, 'reply_queue_declare.json'),
               build_reply_queue_declare(extras))
    write_json(os.path.join(opts.out, 'versions.json'), versions())
    write_json(os.path.join(opts.out, 'manifest.json'), manifest)
    print(f'wrote {len(results)} message files + topology/reply_queue_declare/'
          f'versions/manifest to {opts.out}')


if __name__ == '__main__':
    main()
