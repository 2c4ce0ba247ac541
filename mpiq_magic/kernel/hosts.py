"""Host-name helpers of the kernel's topology (the widgets use them too; no MPI import here)."""

from __future__ import annotations

import ipaddress
import socket


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def node_id() -> str:
    """An id of this machine's running kernel (its ``boot_id``; the host name where there is none):
    processes with equal ids share one node, its clock and its process table."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return socket.gethostname()
