"""pneumo.settings.limit_malloc_arenas: the app's threads share two glibc malloc arenas."""

import subprocess
import sys

from pneumo import settings
from tests.conftest import ROOT, require

# Eight threads allocate, all alive at once, then the script prints how many arenas glibc's malloc_info describes.
COUNT_ARENAS = """
import ctypes, sys, tempfile, threading
from pneumo.settings import limit_malloc_arenas
if sys.argv[1] == "limit":
    assert limit_malloc_arenas()
together = threading.Barrier(8)  # all alive at once: a thread that ended hands its arena on
threads = [threading.Thread(target=lambda: (bytearray(65536), together.wait())) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile() as out:
    stream = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    print(open(out.name).read().count("<heap nr="))
"""


def arenas(mode):
    done = subprocess.run([sys.executable, "-c", COUNT_ARENAS, mode], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_the_threads_share_two_arenas():
    require(settings.limit_malloc_arenas(), "not glibc: there is no arena limit to set")
    assert arenas("limit") <= settings.MALLOC_ARENAS < arenas("default")
