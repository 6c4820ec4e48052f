"""What the current process uses, for tests and benches that check a workload does not grow."""

from __future__ import annotations


def resident_bytes() -> int:
    """This process's resident set size, read from ``/proc/self/status`` (Linux).

    Raises:
        RuntimeError: ``/proc`` gives no ``VmRSS`` line.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")
