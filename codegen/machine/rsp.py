"""A minimal GDB remote-serial-protocol client: memory, registers, breakpoints, continue.

Enough to drive QEMU's gdbstub over a unix socket (`qlane.codegen.machine.qemu`): one packet at
a time, acknowledgements switched off when the stub allows it.
"""

from __future__ import annotations

import select
import socket
import time

INTERRUPT = b"\x03"


class RspError(RuntimeError):
    """The stub refused a request, closed the connection or did not answer in time."""


class RspTimeout(RspError):
    """No stop reply within the time given to `Rsp.resume`."""


class Rsp:
    """One connection to a GDB stub (a connected stream socket)."""

    def __init__(self, sock: socket.socket, reply_timeout_s: float = 30.0) -> None:
        self.sock = sock
        self.reply_timeout_s = reply_timeout_s
        self.buf = b""
        self.acks = True
        self.packet_size = 4096
        features = self.request("qSupported:multiprocess-;swbreak+").decode()
        for item in features.split(";"):
            if item.startswith("PacketSize="):
                self.packet_size = int(item.split("=", 1)[1], 16)
        if "QStartNoAckMode+" in features and self.request("QStartNoAckMode") == b"OK":
            self.acks = False
        self.chunk = max(64, (self.packet_size - 64) // 2 // 16 * 16)
        """Bytes of memory one m/M packet moves (hex doubles them)."""

    @classmethod
    def connect_unix(cls, path: str, wait_s: float = 10.0) -> Rsp:
        """Connect to a stub listening on the unix socket ``path`` (retrying for ``wait_s``)."""
        deadline = time.monotonic() + wait_s
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return cls(sock)
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise RspError(f"no GDB stub on {path} after {wait_s:g} s") from None
                time.sleep(0.01)

    def close(self) -> None:
        """Close the connection."""
        try:
            self.sock.close()
        except OSError:
            pass

    # packets ----------------------------------------------------------------------------------

    def send(self, payload: str | bytes) -> None:
        """Send one packet (without waiting for its reply)."""
        data = payload.encode() if isinstance(payload, str) else payload
        frame = b"$" + data + b"#" + f"{sum(data) & 0xFF:02x}".encode()
        try:
            self.sock.sendall(frame)
        except OSError as e:
            raise RspError(f"GDB stub connection lost: {e}") from None
        if self.acks:
            while self._byte(self.reply_timeout_s) != b"+":
                pass

    def _fill(self, timeout_s: float | None) -> None:
        ready, _, _ = select.select([self.sock], [], [], timeout_s)
        if not ready:
            raise RspTimeout("no reply from the GDB stub")
        try:
            data = self.sock.recv(1 << 16)
        except OSError as e:
            raise RspError(f"GDB stub connection lost: {e}") from None
        if not data:
            raise RspError("the GDB stub closed the connection")
        self.buf += data

    def _byte(self, timeout_s: float | None) -> bytes:
        if not self.buf:
            self._fill(timeout_s)
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def receive(self, timeout_s: float | None = None) -> bytes:
        """The payload of the next packet (``timeout_s`` None: the reply timeout)."""
        timeout_s = self.reply_timeout_s if timeout_s is None else timeout_s
        deadline = None if timeout_s <= 0 else time.monotonic() + timeout_s
        while True:
            start = self.buf.find(b"$")
            end = self.buf.find(b"#", start + 1) if start >= 0 else -1
            if start >= 0 and end >= 0 and len(self.buf) >= end + 3:
                payload = self.buf[start + 1:end]
                self.buf = self.buf[end + 3:]
                if self.acks:
                    self.sock.sendall(b"+")
                return _unescape(payload)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._fill(left)

    def request(self, payload: str | bytes) -> bytes:
        """Send a packet and return its reply; an ``Exx`` reply raises `RspError`."""
        self.send(payload)
        reply = self.receive()
        if len(reply) == 3 and reply.startswith(b"E") and reply[1:].isalnum():
            shown = payload if isinstance(payload, str) else payload[:40].decode(errors="replace")
            raise RspError(f"GDB stub refused {shown[:40]!r}: {reply.decode()}")
        return reply

    # memory and registers ---------------------------------------------------------------------

    def read(self, addr: int, nbytes: int) -> bytes:
        """``nbytes`` of target memory from ``addr``."""
        out = bytearray()
        while len(out) < nbytes:
            n = min(self.chunk, nbytes - len(out))
            out += bytes.fromhex(self.request(f"m{addr + len(out):x},{n:x}").decode())
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        """Write ``data`` to target memory at ``addr``."""
        for off in range(0, len(data), self.chunk):
            part = data[off:off + self.chunk]
            if self.request(f"M{addr + off:x},{len(part):x}:{part.hex()}") != b"OK":
                raise RspError(f"GDB stub did not write 0x{addr + off:08x}")

    def registers(self) -> bytes:
        """The raw ``g`` register block (QEMU 7.2 answers no ``p`` packets without XML)."""
        return bytes.fromhex(self.request("g").decode())

    def set_registers(self, block: bytes) -> None:
        """Write the raw ``G`` register block."""
        if self.request("G" + block.hex()) != b"OK":
            raise RspError("GDB stub did not write the registers")

    def breakpoint(self, addr: int, insert: bool = True, kind: int = 2) -> None:
        """Insert (or remove) a software breakpoint at ``addr``."""
        if self.request(f"{'Z' if insert else 'z'}0,{addr:x},{kind:x}") != b"OK":
            raise RspError(f"GDB stub cannot set a breakpoint at 0x{addr:08x}")

    def resume(self, timeout_s: float = 0.0) -> bytes:
        """Continue until the next stop; its stop reply. `RspTimeout` after ``timeout_s``
        (0: wait forever), with the target stopped again."""
        self.send("c")
        try:
            return self.receive(timeout_s if timeout_s > 0 else 0)
        except RspTimeout:
            self.sock.sendall(INTERRUPT)
            self.receive()
            raise


def _unescape(payload: bytes) -> bytes:
    if b"}" not in payload:
        return payload
    out = bytearray()
    it = iter(payload)
    for b in it:
        out.append(next(it) ^ 0x20 if b == 0x7D else b)
    return bytes(out)
