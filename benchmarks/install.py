"""What `pip install .` costs: install time and the environment's size.

    python benchmarks/install.py [--source DIR] [--extra keras]

Makes a fresh virtual environment in a temporary folder, installs the
package from DIR (default: this checkout) with pip (its cache as it is: run
it twice to time a warm cache), and prints the seconds, the environment's
size and whether TensorFlow is importable.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=ROOT)
    parser.add_argument("--extra", help="install .[EXTRA] instead")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pneumo-install-") as folder:
        venv = Path(folder) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        target = f"{args.source}[{args.extra}]" if args.extra else str(args.source)
        load = os.getloadavg()[0]
        start = time.perf_counter()
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", target], check=True)
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
        tensorflow = subprocess.run([str(venv / "bin" / "python"), "-c", "import tensorflow"],
                                    capture_output=True).returncode == 0
        print(f"pip install {target}: {seconds:.0f} s, environment {size / 2**20:.0f} MB, "
              f"TensorFlow importable: {tensorflow}; load average before {load:.1f}")


if __name__ == "__main__":
    main()
