"""Pilot fixtures shared by the pilot tests: two local pilots with different devices.

``wide``: 1 classical + 2 ideal 8-qubit devices. ``narrow``: 2 classical + 2 noisy 4-qubit
devices. Started at once (one thread each) and stopped at teardown; the pilots only kill PIDs
they started.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = str(Path(__file__).resolve().parent)

WIDE_QUBITS = 8
NARROW_QUBITS = 4


def wide_devices():
    from mpiq_magic.kernel.config import DeviceSpec

    return [DeviceSpec("127.0.0.1", i, num_qubits=WIDE_QUBITS, seed=100 + i) for i in range(2)]


def narrow_devices():
    from mpiq_magic.kernel.config import DeviceSpec

    noise = {"depolarizing": 0.01, "depolarizing_2q": 0.03, "readout": 0.02}
    return [DeviceSpec("127.0.0.1", 10 + i, num_qubits=NARROW_QUBITS, noise=noise, seed=200 + i) for i in range(2)]


@pytest.fixture(scope="module")
def two_pilots():
    """A PilotManager with pilots ``wide`` and ``narrow`` running."""
    from mpiq_magic.pilot import PilotDescription, PilotManager

    # engines import the test modules' functions by reference, like any user module
    env = {"PYTHONPATH": os.pathsep.join([TESTS, *filter(None, [os.environ.get("PYTHONPATH")])])}
    pm = PilotManager()
    try:
        pm.create_pilots([
            PilotDescription("wide", classical=1, quantum=2, devices=wide_devices(), timeout=60, seed=7, env=env),
            PilotDescription("narrow", classical=2, quantum=2, devices=narrow_devices(), timeout=60, seed=7, env=env),
        ])
        yield pm
    finally:
        pm.stop()


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
