"""Bad input and missing peers: clear errors that name what was wrong, and nobody hangs."""

from __future__ import annotations

import pytest

from mpiq_magic.kernel import ConfigError, load_devices
from mpiq_magic.kernel.config import parse_devices
from mpirun import results, run_mpi

pytestmark = pytest.mark.timeout(180)


def _write(tmp_path, text):
    path = tmp_path / "devices.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[[devices]]\nhost = '127.0.0.1'\n", ["entry 0", "device_id"]),
        ("[[devices]]\nhost = '127.0.0.1'\ndevice_id = 0\nnum_qubits = -3\n", ["entry 0", "num_qubits", "-3"]),
        (
            "[[devices]]\nhost='a'\ndevice_id=0\n[[devices]]\nhost='a'\ndevice_id=1\nmethod='quantum_magic'\n",
            ["entry 1", "method", "quantum_magic"],
        ),
        ("[[devices]]\nhost='a'\ndevice_id=0\ncolour='red'\n", ["entry 0", "colour"]),
        ("[[devices]]\nhost='a'\ndevice_id=0\nnoise={depolarizing=1.5}\n", ["noise.depolarizing", "1.5"]),
        ("[[devices]]\nhost='a'\ndevice_id=0\n[[devices]]\nhost='a'\ndevice_id=0\n", ["entry 1", "already defined by entry 0"]),
        ("devices = 3\n", ["[[devices]]"]),
        ("[[devices]\n", ["not valid TOML"]),
    ],
)
def test_bad_devices_file_names_file_entry_and_field(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_devices(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


def test_good_devices_file_with_defaults(tmp_path):
    path = _write(
        tmp_path,
        "[defaults]\nnum_qubits = 24\n[[devices]]\nhost='127.0.0.1'\ndevice_id=3\nseed=5\n"
        "noise = { depolarizing = 0.01, readout = 0.02 }\ncoupling = [[0, 1], [1, 2]]\n",
    )
    (spec,) = load_devices(path)
    assert spec.key == ("127.0.0.1", 3) and spec.num_qubits == 24 and spec.seed == 5
    assert spec.noise == {"depolarizing": 0.01, "readout": 0.02}
    assert spec.coupling == ((0, 1), (1, 2))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml"):
        load_devices(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="non-empty"):
        parse_devices({"devices": []})


BAD_INIT = r"""
import sys
from mpiq_magic import kernel as mpiq
try:
    mpiq.init(devices=sys.argv[1], classical=1, timeout=20)
    emit({"error": None})
except mpiq.MPIQError as exc:
    emit({"error": type(exc).__name__, "message": str(exc)})
"""


def test_init_with_too_few_devices_fails_on_every_rank(tmp_path):
    path = _write(tmp_path, "[[devices]]\nhost='127.0.0.1'\ndevice_id=0\n")
    res = results(run_mpi(BAD_INIT, 3, args=[str(path)], timeout=60, tmp_path=tmp_path))
    assert len(res) == 3
    for r in res:
        assert r["error"] == "ConfigError"
        assert "defines 1 device(s) but 2 quantum" in r["message"] and str(path) in r["message"]


def test_binding_to_another_host_is_an_error_naming_qrank_and_host(tmp_path):
    path = _write(
        tmp_path,
        "[[devices]]\nhost='127.0.0.1'\ndevice_id=0\n[[devices]]\nhost='qpu-node-7.invalid'\ndevice_id=2\n",
    )
    res = results(run_mpi(BAD_INIT, 3, args=[str(path)], timeout=60, tmp_path=tmp_path))
    assert len(res) == 3
    for r in res:
        assert r["error"] == "BindingError"
        assert "qrank 1" in r["message"] and "qpu-node-7.invalid" in r["message"]


TIMEOUTS = r"""
from mpiq_magic import kernel as mpiq
hc = mpiq.init(classical=2, timeout=30)   # 2 classical + 2 quantum
out = {"me": str(hc.me)}
# gather: qrank 1 contributes too late; the root keeps what qrank 0 sent
import time
if hc.qrank == 1:
    time.sleep(2.5)
    hc.gather("too-late")
else:
    try:
        g = hc.gather("result-from-q0" if hc.qrank == 0 else None, timeout=1.5)
        out["gather"] = g
    except mpiq.MPIQTimeoutError as exc:
        out["gather_error"] = str(exc)
        out["gather_missing"] = exc.missing
        out["gather_partial"] = exc.partial
# CC barrier: classical rank 1 never arrives
if hc.rank == 0:
    try:
        hc.barrier(mpiq.CC, timeout=1.0)
    except mpiq.MPIQTimeoutError as exc:
        out["cc_error"] = str(exc)
# fast CC barrier (record=False): rank 1 arrives after rank 0 gave up; the board names it
if hc.rank == 0:
    try:
        hc.barrier(mpiq.CC, timeout=1.0, record=False)
    except mpiq.MPIQTimeoutError as exc:
        out["cc_fast_error"] = str(exc)
elif hc.rank == 1:
    time.sleep(4.5)  # rank 0 enters at ~2.5 s (after the gather and CC timeouts), gives up at ~3.5 s
    hc.barrier(mpiq.CC, record=False)  # completes the barrier rank 0 abandoned
# recv from a silent peer
if hc.rank == 1:
    try:
        hc.recv(mpiq.QRank(0), tag=9, timeout=0.5)
    except mpiq.MPIQTimeoutError as exc:
        out["recv_error"] = str(exc)
# QQ barrier: qrank 0 alone
if hc.qrank == 0:
    try:
        hc.barrier(mpiq.QQ, timeout=1.0)
    except mpiq.MPIQTimeoutError as exc:
        out["qq_error"] = str(exc)
# send_q with a gate crossing groups: the root raises, the monitors are told instead of waiting
from qiskit import QuantumCircuit
circ = None
if hc.rank == 0:
    circ = QuantumCircuit(4)
    circ.h(0)
    circ.cx(1, 2)
try:
    hc.scatter(circ, send_q=[[0, 1], [2, 3]], timeout=20)
except mpiq.SendQError as exc:
    out["sendq_root"] = str(exc)
except mpiq.MPIQError as exc:
    out["sendq_remote"] = str(exc)
emit(out)
"""


def test_timeouts_name_the_missing_peer_and_keep_partial_results(tmp_path):
    res = {r["me"]: r for r in results(run_mpi(TIMEOUTS, 4, timeout=90, tmp_path=tmp_path))}
    root = res["rank 0"]
    assert "qrank 1" in root["gather_error"] and root["gather_missing"] == ["qrank 1 (device 127.0.0.1:1)"]
    assert root["gather_partial"] == ["result-from-q0", None]
    assert "rank 1 did not arrive" in root["cc_error"]
    assert "CC barrier #2 on rank 0 timed out after 1 s; rank 1 did not arrive." == root["cc_fast_error"]
    assert "qrank 0" in res["rank 1"]["recv_error"]
    assert "qrank 1" in res["qrank 0"]["qq_error"]
    assert "Gate 'cx' on qubits [1, 2] crosses send_q groups [0, 1]" in root["sendq_root"]
    for q in ("qrank 0", "qrank 1"):
        assert "scatter failed on rank 0" in res[q]["sendq_remote"]
        assert "cx" in res[q]["sendq_remote"]
