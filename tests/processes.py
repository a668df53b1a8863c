"""Stopping the servers that tests and benchmarks start."""

import subprocess


def stop(process, timeout=20):
    """Ask `process` to end; kill it if it has not within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
