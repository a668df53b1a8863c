"""Decoding uploads in separate, limited worker processes.

    pool = DecoderPool()           # starts the workers now
    decoded = pool.decode(path)    # -> pneumo.inputs.decode.Decoded, or raises InputError

Why: decoding is where an upload can attack. A decompression bomb, a DICOM
frame table pointing 10,000 times at one JPEG, a progressive JPEG of 2000
scans or a TIFF of 60,000 image directories costs gigabytes or tens of
seconds in whatever process decodes it. Here that process is a worker
(pneumo/inputs/sandbox_worker.py) with its own limits:

    address space   PNEUMO_DECODE_MEMORY_MB   (default 1024)  RLIMIT_AS
    CPU per file    PNEUMO_DECODE_CPU_S       (default 7)     RLIMIT_CPU
    wall clock      PNEUMO_DECODE_TIMEOUT_S   (default 8)     enforced here: kill

A worker that runs out of memory, of CPU or of time is killed; that request
gets an InputError saying so, a fresh worker takes its place, and the other
requests never notice. The server process never holds more of a file than
the decoded result: at most 2048 x 2048 x 3 bytes (pneumo.inputs.decode.MAX_SIDE).

The workers are fresh Python interpreters (subprocess, not fork): they do
not inherit TensorFlow, the model or other requests' data, and they do not
re-run app.py as multiprocessing's spawn would. Their stderr goes nowhere,
so nothing a decoder prints reaches the server's log.
"""

import atexit
import json
import os
import queue
import tempfile
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from PIL import Image

from pneumo.inputs.decode import MAX_SIDE, Decoded, InputError
from pneumo.inputs.sandbox_worker import LENGTH, MAX_FRAME_BYTES
from pneumo.settings import setting

ROOT = Path(__file__).resolve().parents[2]
MEMORY_MB = setting("PNEUMO_DECODE_MEMORY_MB")
CPU_S = setting("PNEUMO_DECODE_CPU_S")
TIMEOUT_S = setting("PNEUMO_DECODE_TIMEOUT_S")
START_TIMEOUT_S = 60  # importing numpy, Pillow and pydicom on a busy machine
WAIT_FOR_WORKER_S = 120  # a request waits this long for a free worker before "busy"
RECYCLE_AFTER = 200  # requests per worker: memory fragmentation never builds up
CHANNELS = {"L": 1, "RGB": 3}

ORDINARY = "Please upload an ordinary export of the X-ray (PNG or JPEG)."
# A worker that dies mid-file: its limits stopped it, or the file crashed a decoder (both show as a dead pipe).
TOO_COSTLY = ("Decoding this file stopped the decoder: the file needed more memory or CPU time than this server "
              "allows, or it is malformed. " + ORDINARY)
TOO_MUCH_CPU = "Decoding this file needed more CPU time than this server allows, so it was stopped. " + ORDINARY
# A worker that breaks the protocol (an image of no size, a garbled frame) is replaced; the message
# claims no more than that.
BROKEN = "The decoder gave no usable image for this file, so it was stopped. " + ORDINARY
TOO_SLOW = ("Decoding this file took longer than {seconds:.0f} s, more than this server allows, so it was "
            "stopped. Please upload an ordinary export of the X-ray (PNG or JPEG).")
BUSY = "The server is busy decoding other uploads; please try again in a minute."


class WorkerFailed(Exception):
    """The worker died, hung or broke the protocol; the message is for the uploader."""


class Worker:
    """One worker process and its pipes."""

    def __init__(self, memory_mb: int, cpu_s: int):
        # A bare environment: no HF_TOKEN or other secret of the server's reaches a decoder.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-s", "-m", "pneumo.inputs.sandbox_worker", str(memory_mb << 20), str(cpu_s)],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.ready = False
        self.uses = 0

    def decode(self, path: str, timeout_s: float) -> Decoded:
        if not self.ready:  # start-up is not the upload's fault: it has its own clock
            if not self._read_json(time.monotonic() + START_TIMEOUT_S).get("ready"):
                raise WorkerFailed(BROKEN)
            self.ready = True
        self.uses += 1
        deadline = time.monotonic() + timeout_s
        self._send({"path": str(path)})
        header = self._read_json(deadline, timeout_s)
        if not header.get("ok"):
            raise InputError(str(header.get("message", "This file could not be decoded."))[:500])
        mode, size = self._checked_geometry(header)
        pixels = self._read_exact(size[0] * size[1] * CHANNELS[mode], deadline, timeout_s)
        notes = [str(note)[:500] for note in header.get("warnings", [])][:20]
        return Decoded(Image.frombytes(mode, size, pixels), notes, "dicom" if header.get("kind") == "dicom" else "image")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            pipe.close()

    def _send(self, message: dict) -> None:
        body = json.dumps(message).encode()
        try:
            self.process.stdin.write(LENGTH.pack(len(body)) + body)
            self.process.stdin.flush()
        except OSError:
            raise WorkerFailed(self._death()) from None

    def _read_json(self, deadline: float, timeout_s: float = START_TIMEOUT_S) -> dict:
        (size,) = LENGTH.unpack(self._read_exact(LENGTH.size, deadline, timeout_s))
        if size > MAX_FRAME_BYTES:
            raise WorkerFailed(BROKEN)
        try:
            message = json.loads(self._read_exact(size, deadline, timeout_s))
        except ValueError:
            raise WorkerFailed(BROKEN) from None
        if not isinstance(message, dict):
            raise WorkerFailed(BROKEN)
        return message

    def _read_exact(self, count: int, deadline: float, timeout_s: float) -> bytes:
        """`count` bytes from the worker by `deadline`; a dead worker (killed by
        its memory or CPU limit) shows here as the end of the stream."""
        fd, chunks, missing = self.process.stdout.fileno(), [], count
        while missing:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise WorkerFailed(TOO_SLOW.format(seconds=timeout_s))
            chunk = os.read(fd, min(missing, 1 << 20))
            if not chunk:
                raise WorkerFailed(self._death())
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    @staticmethod
    def _checked_geometry(header: dict) -> tuple[str, tuple[int, int]]:
        """What the worker says it sends, bounded before a byte of it is read."""
        mode, width, height = header.get("mode"), header.get("width"), header.get("height")
        if mode not in CHANNELS or not all(isinstance(side, int) and 0 < side <= MAX_SIDE for side in (width, height)):
            raise WorkerFailed(BROKEN)
        return mode, (width, height)

    def _death(self) -> str:
        """Why the worker's pipe closed, as far as its exit status tells."""
        try:
            code = self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return TOO_COSTLY
        return TOO_MUCH_CPU if code == -signal.SIGXCPU else TOO_COSTLY


class DecoderPool:
    """`size` workers; each request borrows one, a failed one is replaced."""

    def __init__(self, size: int = 3, timeout_s: float = TIMEOUT_S, memory_mb: int = MEMORY_MB, cpu_s: int = CPU_S):
        self.timeout_s, self.memory_mb, self.cpu_s = timeout_s, memory_mb, cpu_s
        self._idle: queue.Queue[Worker] = queue.Queue()
        self._all: set[Worker] = set()
        self._lock = threading.Lock()
        for _ in range(size):
            self._idle.put(self._start())
        atexit.register(self.close)

    def decode(self, path) -> Decoded:
        """Decode `path` in a worker; raises InputError for every failure."""
        worker = self._borrow()
        healthy = False
        try:
            result = worker.decode(path, self.timeout_s)
            healthy = True
            return result
        except InputError:
            healthy = True  # the worker answered: the file was refused
            raise
        except WorkerFailed as failure:
            raise InputError(str(failure)) from None
        except Exception:  # a broken pipe, a closed descriptor: still only a message for this request
            raise InputError(TOO_COSTLY) from None
        finally:
            self._give_back(worker, healthy)

    def decode_bytes(self, data: bytes) -> Decoded:
        """The same for bytes that were never uploaded (the MCP tool's): they
        sit in a private temporary file only while the worker decodes them."""
        with tempfile.NamedTemporaryFile(prefix="pneumo-") as file:
            file.write(data)
            file.flush()
            return self.decode(file.name)

    def close(self) -> None:
        with self._lock:
            workers, self._all = list(self._all), set()
        for worker in workers:
            worker.kill()

    def _borrow(self) -> Worker:
        """An idle worker that is still alive (one that died idle is replaced, not blamed on this upload)."""
        deadline = time.monotonic() + WAIT_FOR_WORKER_S
        while True:
            try:
                worker = self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise InputError(BUSY) from None
            if worker.process.poll() is None:
                return worker
            self._give_back(worker, healthy=False)

    def _start(self) -> Worker:
        worker = Worker(self.memory_mb, self.cpu_s)
        with self._lock:
            self._all.add(worker)
        return worker

    def _give_back(self, worker: Worker, healthy: bool) -> None:
        if healthy and worker.uses < RECYCLE_AFTER:
            self._idle.put(worker)
            return
        with self._lock:
            self._all.discard(worker)
        worker.kill()
        self._idle.put(self._start())
