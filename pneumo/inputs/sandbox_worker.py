"""The decoding worker: one process that runs pneumo.inputs.decode on files it is sent.

    python -m pneumo.inputs.sandbox_worker MEMORY_BYTES CPU_SECONDS

Started by pneumo/inputs/sandbox.py, never by hand. It limits itself before it
imports anything: address space (RLIMIT_AS, so a decompression bomb ends in
a MemoryError or a kill, here and not in the server), no core files (they
would hold an X-ray), no file writes, few open files; and CPU seconds per
request (RLIMIT_CPU: a runaway decoder gets SIGXCPU). The parent enforces a
wall-clock deadline on top.

Protocol on stdin/stdout, one request at a time. A frame is a 4-byte
big-endian length and that many bytes of JSON:

    worker -> parent  {"ready": true}                        once, after start-up
    parent -> worker  {"path": "/tmp/gradio/.../x.png"}
    worker -> parent  {"ok": true, "mode": "L" | "RGB", "width": w, "height": h,
                       "warnings": [...], "kind": "image" | "dicom"}
                      followed by exactly w * h * (1 or 3) raw pixel bytes
                  or  {"ok": false, "message": "why, for the uploader"}

JSON and raw bytes, not pickle: a decoder bug exploited inside the worker
must not become code running in the server.
"""

import json
import resource
import signal
import struct
import sys

LENGTH = struct.Struct(">I")
MAX_FRAME_BYTES = 1 << 20  # JSON frames are small; a larger length is a broken peer


def send(stream, message: dict, payload: bytes = b"") -> None:
    body = json.dumps(message).encode()
    stream.write(LENGTH.pack(len(body)) + body + payload)
    stream.flush()


def receive(stream) -> dict | None:
    """The next JSON frame, or None at the end of the stream."""
    head = stream.read(LENGTH.size)
    if len(head) < LENGTH.size:
        return None
    (size,) = LENGTH.unpack(head)
    if size > MAX_FRAME_BYTES:
        return None
    return json.loads(stream.read(size))


def limit_self(memory_bytes: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file write then fails with an error, not a kill
    for limit, value in ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_CORE, 0),
                         (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_NOFILE, 64)):
        resource.setrlimit(limit, (value, value))


def allow_cpu_seconds(seconds: int) -> None:
    """RLIMIT_CPU counts the process's whole life: allow `seconds` more from now.
    Only the soft limit moves; exceeding it sends SIGXCPU, which kills."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (used + seconds, resource.RLIM_INFINITY))


def handle(request: dict) -> tuple[dict, bytes]:
    from pneumo.inputs.decode import MAX_SIDE, TOO_LARGE_TO_DECODE, InputError, decode

    try:
        decoded = decode(request["path"])
    except InputError as error:
        return {"ok": False, "message": str(error)}, b""
    except MemoryError:
        return {"ok": False, "message": TOO_LARGE_TO_DECODE}, b""
    image = decoded.image
    if not all(0 < side <= MAX_SIDE for side in image.size):  # decode() prevents it; never send what the parent refuses
        return {"ok": False, "message": f"This file decodes to a {image.width} x {image.height} image, which cannot "
                                        "be read as an X-ray."}, b""
    header = {"ok": True, "mode": image.mode, "width": image.width, "height": image.height,
              "warnings": decoded.warnings, "kind": decoded.kind}
    return header, image.tobytes()


def main() -> None:
    memory_bytes, cpu_seconds = int(sys.argv[1]), int(sys.argv[2])
    limit_self(memory_bytes)
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must never corrupt the reply stream
    import pneumo.inputs.decode  # noqa: F401  imports now, not on the first request's clock
    from pneumo.inputs.dicom import quiet_pydicom

    quiet_pydicom()
    send(replies, {"ready": True})
    while (request := receive(requests)) is not None:
        allow_cpu_seconds(cpu_seconds)
        header, payload = handle(request)
        send(replies, header, payload)


if __name__ == "__main__":
    main()
