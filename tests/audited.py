"""Run a module as `python -m` would, writing every path it opens to LOG (one per line):

    python -m tests.audited LOG MODULE [ARGS...]

Python's audit hook sees each `open` (builtins, io, os), in every thread, so a test
can say which files a training or fitting command read (tests/test_locked_split.py).
"""

import os
import runpy
import sys


def main():
    log, module, *args = sys.argv[1:]
    opened = set()

    def hook(event, details):
        if event == "open" and details and isinstance(details[0], (str, bytes, os.PathLike)):
            opened.add(os.path.abspath(os.fsdecode(details[0])))

    sys.addaudithook(hook)
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        with open(log, "w") as f:
            f.write("\n".join(sorted(opened.copy())) + "\n")  # a copy: other threads may still open files


if __name__ == "__main__":
    main()
