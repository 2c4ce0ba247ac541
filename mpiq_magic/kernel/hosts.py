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


def interface_address(name: str) -> str:
    """The IPv4 address of network interface ``name`` (``lo`` -> ``127.0.0.1``).

    Raises:
        ConfigError: no such interface, or it has no IPv4 address; the message lists the
            interfaces that do.
    """
    import psutil

    from .errors import ConfigError

    addrs = {
        iface: [a.address for a in entries if a.family == socket.AF_INET]
        for iface, entries in psutil.net_if_addrs().items()
    }
    usable = ", ".join(f"{i} ({', '.join(a)})" for i, a in sorted(addrs.items()) if a) or "none"
    if name not in addrs:
        raise ConfigError(f"Network interface {name!r} does not exist on {socket.gethostname()}; interfaces with an IPv4 address: {usable}.")
    if not addrs[name]:
        raise ConfigError(f"Network interface {name!r} has no IPv4 address; interfaces with one: {usable}.")
    return addrs[name][0]
