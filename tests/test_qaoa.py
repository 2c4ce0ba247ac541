"""Noise-aware distributed QAOA (seed 002, Algorithm 1) and calibrated devices.

Fast parts run in-process (no MPI): calibration loading and its errors, the threshold filter
against the fake backend's stored calibration, regions (count, capacity, disjointness and
isomorphism verified independently of the finder), split, merge, and the 16-node 3-regular
MaxCut on two ideal 10-qubit devices (merged cut >= 0.9x brute force). One real ``mpiexec`` job
runs the same algorithm through ``SamplerV2`` on 2 monitors (one of them calibrated).
"""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest

from mpiq_magic.kernel.calibration import (
    Calibration, available_calibrations, calibrated_device, load_calibration, save_calibration,
)
from mpiq_magic.kernel.config import DeviceSpec, parse_devices
from mpiq_magic.kernel.errors import ConfigError, UsageError
from mpiq_magic.qaoa import (
    as_graph, brute_force_maxcut, check_regions, cut_value, device_errors, distributed_qaoa,
    find_regions, merge_solutions, regular_graph, split_graph, usable_graph,
)

pytestmark = pytest.mark.timeout(300)

needs_fakes = pytest.mark.skipif(not available_calibrations(), reason="qiskit-ibm-runtime is not installed")


def _raw_props(name):
    """The fake backend's props JSON read here, independently of the calibration module."""
    import importlib.util
    from pathlib import Path

    base = Path(importlib.util.find_spec("qiskit_ibm_runtime").origin).parent / "fake_provider" / "backends" / name
    return json.loads(next(base.glob("props_*.json")).read_text())


# ---------------------------------------------------------------- calibration sources

@needs_fakes
def test_fake_backend_calibration_matches_qiskit_ibm_runtime():
    from qiskit_ibm_runtime.fake_provider import FakeGuadalupeV2

    cal = load_calibration("FakeGuadalupeV2")
    backend = FakeGuadalupeV2()
    assert cal.num_qubits == backend.num_qubits == 16
    assert set(map(tuple, backend.coupling_map.get_edges())) == set(cal.coupling)
    for q in range(16):
        assert cal.readout_error[q] == pytest.approx(backend.target["measure"][(q,)].error)
    for (a, b), err in cal.pair_errors().items():
        assert err == pytest.approx(max(backend.target["cx"][(a, b)].error, backend.target["cx"][(b, a)].error))


@needs_fakes
def test_calibration_names_and_unknown_backend_lists_available():
    for name in ("FakeCairoV2", "FakeCairo", "cairo", "fake:FakeCairoV2", "ibmq_cairo"):
        assert load_calibration(name).num_qubits == 27
    with pytest.raises(ConfigError, match="available fake backends: .*FakeGuadalupeV2"):
        load_calibration("FakeNowhereV2")


@needs_fakes
def test_devices_file_calibration_field(tmp_path):
    spec = parse_devices({"devices": [{"host": "127.0.0.1", "device_id": 0, "calibration": "FakeGuadalupeV2"}]})[0]
    assert spec.calibration == "fake:FakeGuadalupeV2" and spec.num_qubits == 16
    assert "cx" in spec.basis_gates and "measure" in spec.basis_gates
    with pytest.raises(ConfigError, match=r"entry 0 .*calibration.*num_qubits"):
        parse_devices({"devices": [{"host": "h", "device_id": 0, "calibration": "FakeCairoV2", "num_qubits": 5}]})
    with pytest.raises(ConfigError, match="field 'calibration'.*available fake backends"):
        parse_devices({"devices": [{"host": "h", "device_id": 0, "calibration": "FakeMoonV2"}]})
    # a calibration JSON file of our own format, relative to the devices file
    save_calibration(load_calibration("FakeGuadalupeV2"), tmp_path / "cal.json")
    toml = tmp_path / "d.toml"
    toml.write_text('[[devices]]\nhost = "127.0.0.1"\ndevice_id = 0\ncalibration = "cal.json"\n')
    from mpiq_magic.kernel.config import load_devices

    spec2 = load_devices(toml)[0]
    assert spec2.calibration == str((tmp_path / "cal.json").resolve())
    assert load_calibration(spec2.calibration) == load_calibration("FakeGuadalupeV2")


@needs_fakes
def test_noise_model_and_target_from_calibration():
    from monitor_engine.backend import build_noise_model
    from monitor_engine.calibration import calibration_target
    from monitor_engine.target import device_target

    spec = calibrated_device("127.0.0.1", 0, "FakeGuadalupeV2", seed=1)
    model = build_noise_model(spec)
    assert "cx" in model.noise_instructions and "measure" in model.noise_instructions
    assert sorted(model.noise_qubits) == list(range(16))
    target = calibration_target(load_calibration("FakeGuadalupeV2"))
    assert target["cx"][(0, 1)].error > 0
    assert device_target(spec).num_qubits == 16
    with pytest.raises(Exception, match="calibration"):
        build_noise_model(DeviceSpec("h", 0, num_qubits=16, calibration="fake:FakeGuadalupeV2", noise={"readout": 0.1}))


# ---------------------------------------------------------------- threshold filter and regions

@needs_fakes
@pytest.mark.parametrize("name,folder", [("FakeGuadalupeV2", "guadalupe"), ("FakeCairoV2", "cairo")])
@pytest.mark.parametrize("eta", [0.02, 0.05])
def test_threshold_filter_removes_exactly_what_is_above_eta(name, folder, eta):
    props = _raw_props(folder)
    readout = {q: next(p["value"] for p in item if p["name"] == "readout_error") for q, item in enumerate(props["qubits"])}
    pair = {}
    for g in props["gates"]:
        if len(g["qubits"]) == 2:
            e = next(p["value"] for p in g["parameters"] if p["name"] == "gate_error")
            key = tuple(sorted(g["qubits"]))
            pair[key] = max(pair.get(key, 0.0), e)
    cal = load_calibration(name)
    for a, b in cal.coupling:  # coupled in the configuration but no calibrated gate: unknown, dropped
        pair.setdefault((min(a, b), max(a, b)), 1.0)
    usable = usable_graph(device_errors(load_calibration(name)), eta)
    assert set(usable.removed_qubits) == {q for q, e in readout.items() if e > eta}
    assert set(usable.graph.nodes) == {q for q, e in readout.items() if e <= eta}
    assert set(usable.removed_couplings) == {k for k, e in pair.items() if e > eta}
    kept = {k for k, e in pair.items() if e <= eta and readout[k[0]] <= eta and readout[k[1]] <= eta}
    assert {tuple(sorted(e)) for e in usable.graph.edges} == kept
    assert usable.removed_qubits or usable.removed_couplings  # the thresholds bite on these devices


@needs_fakes
@pytest.mark.parametrize("name,n,k", [("FakeCairoV2", 8, 2), ("FakeCairoV2", 5, 3), ("FakeGuadalupeV2", 5, 2)])
def test_regions_disjoint_equivalent_and_ranked(name, n, k):
    cal = load_calibration(name)
    regions = find_regions(cal, n, k, eta=0.05)
    assert regions.k == k
    assert check_regions(cal, regions, 0.05) == []
    # independent verification: capacity, disjointness, usable, isomorphic induced subgraphs
    usable = usable_graph(device_errors(cal), 0.05).graph
    sets = [set(r.qubits) for r in regions.regions]
    assert all(len(s) == n for s in sets)
    assert len(set().union(*sets)) == n * k
    assert all(s <= set(usable.nodes) for s in sets)
    induced = [usable.subgraph(s) for s in sets]
    assert all(nx.is_connected(g) for g in induced)
    assert all(nx.is_isomorphic(induced[0], g) for g in induced[1:])
    fid = [r.fidelity for r in regions.regions]
    assert fid == sorted(fid, reverse=True)
    for r in regions.regions:  # fidelity = product of (1 - error)
        expected = 1.0
        for q in r.qubits:
            expected *= (1 - cal.readout_error[q]) * (1 - cal.single_qubit_errors()[q])
        for a, b in regions.template_edges:
            expected *= 1 - cal.pair_errors()[tuple(sorted((r.qubits[a], r.qubits[b])))]
        assert r.fidelity == pytest.approx(expected)


def test_regions_refused_with_values_when_too_big():
    spec = DeviceSpec("127.0.0.1", 0, num_qubits=6)
    with pytest.raises(UsageError, match="no connected group of 8 usable qubits.*largest connected group has 6"):
        find_regions(spec, 8, 1)


# ---------------------------------------------------------------- split, merge

def test_split_is_balanced_and_within_capacity():
    g = regular_graph(40, 3, seed=4)
    split = split_graph(g, 10)
    assert sorted(len(p) for p in split.parts) == [10, 10, 10, 10]
    assert sorted(n for p in split.parts for n in p) == list(range(40))
    part = split.part_of()
    assert split.cut_weight == sum(1 for u, v in g.edges if part[u] != part[v])
    assert split.cut_weight < g.number_of_edges() / 2  # far better than a random split


def test_merge_orients_parts_and_flips_boundary():
    g = nx.cycle_graph(8)
    parts = [(0, 1, 2, 3), (4, 5, 6, 7)]
    local = [{0: 0, 1: 1, 2: 0, 3: 1}, {4: 1, 5: 0, 6: 1, 7: 0}]  # part 2 badly oriented
    merged = merge_solutions(g, parts, local)
    assert merged.concatenated_cut == 6 and merged.cut == 8 == brute_force_maxcut(g)[0]
    assert merged.flipped_parts
    assert cut_value(g, merged.assignment) == merged.cut


def test_graph_input_forms(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"nodes": 4, "edges": [[0, 1], [1, 2, 2.0], [2, 3]]}))
    g = as_graph(path)
    assert g.number_of_nodes() == 4 and g[1][2]["weight"] == 2.0
    with pytest.raises(UsageError, match="no edges"):
        as_graph({"nodes": 3, "edges": []})


# ---------------------------------------------------------------- the algorithm, in-process

@pytest.mark.parametrize("graph_seed", [1, 2])
def test_16_node_maxcut_on_two_ideal_devices_reaches_90_percent(graph_seed):
    devices = [DeviceSpec("127.0.0.1", i, num_qubits=10, seed=100 + i) for i in range(2)]
    g = regular_graph(16, 3, seed=graph_seed)
    result = distributed_qaoa(g, devices, p=1, seed=7, maxiter=25, shots=256, final_shots=1024)
    assert len(result.split.parts) == 2 and all(len(p) <= 10 for p in result.split.parts)
    assert result.optimum == brute_force_maxcut(g)[0]
    assert result.cut == cut_value(g, result.assignment)
    assert result.cut >= 0.9 * result.optimum, result.to_dict()
    assert {s.qrank for s in result.subproblems} == {0, 1}
    assert all(s.p_optimal > 1 / 2 ** len(s.nodes) for s in result.subproblems)  # beats uniform
    json.dumps(result.to_dict())


def test_modes_and_arguments_are_checked():
    devices = [DeviceSpec("127.0.0.1", 0, num_qubits=4)]
    with pytest.raises(UsageError, match="mode must be one of"):
        distributed_qaoa(nx.cycle_graph(4), devices, mode="clever")
    with pytest.raises(UsageError, match="eta must be"):
        distributed_qaoa(nx.cycle_graph(4), devices, eta=2.0)


# ---------------------------------------------------------------- one real mpiexec job

DEVICES_TOML = """
[[devices]]
host = "127.0.0.1"
device_id = 0
calibration = "FakeGuadalupeV2"
seed = 5

[[devices]]
host = "127.0.0.1"
device_id = 1
num_qubits = 8
seed = 6
"""


@needs_fakes
@pytest.mark.mpi
@pytest.mark.timeout(600)
def test_mpiq_qaoa_cli_on_two_monitors(tmp_path):
    """``mpiq qaoa`` under the bundled mpiexec: 1 classical rank + 2 monitors (one calibrated
    Guadalupe, one ideal), aware mode through SamplerV2; payloads travel once, then values only."""
    import subprocess
    import sys

    from mpiq_magic.qaoa.graph import graph_to_dict

    g = regular_graph(12, 3, seed=3)
    (tmp_path / "g.json").write_text(json.dumps(graph_to_dict(g)))
    (tmp_path / "d.toml").write_text(DEVICES_TOML)
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "mpiq_magic.cli", "qaoa", str(tmp_path / "g.json"), "-q", "2",
         "--devices", str(tmp_path / "d.toml"), "--max-part", "6", "--maxiter", "6", "--shots", "128",
         "--final-shots", "256", "--json", str(out), "--timeout", "540"],
        capture_output=True, text=True, timeout=580,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    run = doc["runs"][0]
    assert doc["optimum"] == brute_force_maxcut(g)[0]
    assert run["cut"] >= 0.9 * doc["optimum"]
    subs = {s["qrank"]: s for s in run["subproblems"]}
    assert set(subs) == {0, 1}
    assert len(subs[0]["regions"]) == 2  # two regions on the calibrated Guadalupe
    assert subs[1]["regions"] == [[0, 1, 2, 3, 4, 5]] or len(subs[1]["regions"]) == 1
    wire = run["wire"]
    assert wire[0]["kind"] == "grid" and wire[0]["payloads_sent"] >= 2
    assert all(w["payloads_sent"] == 0 for w in wire[1:]), wire  # parameters only afterwards
    assert all(w["values_bytes"] > 0 for w in wire[1:])


# ---------------------------------------------------------------- %mpiq qaoa: parsing, view

def test_qaoa_magic_parses_with_defaults_and_options():
    from mpiq_magic import magics as M

    name, args = M.parse("qaoa g", None)
    assert name == "qaoa"
    assert (args.graph, args.mode, args.p, args.eta, args.k, args.max_part, args.shots, args.final_shots,
            args.maxiter, args.grid, args.seed, args.optimum, args.out, args.timeout, args.merge) == (
        "g", "aware", 1, 0.05, 2, None, 512, 2048, 40, 4, 0, None, "qaoa_result", None, "exact")
    _, args = M.parse("qaoa graph.json --naive -p 2 --eta 0.03 -k 3 --max-part 6 --shots 64 --final-shots 128 "
                      "--maxiter 5 --grid 2 --seed 4 --optimum 30 --out r --timeout 90 --merge qaoa", None)
    assert (args.graph, args.mode, args.p, args.eta, args.k, args.max_part, args.shots, args.final_shots,
            args.maxiter, args.grid, args.seed, args.optimum, args.out, args.timeout) == (
        "graph.json", "naive", 2, 0.03, 3, 6, 64, 128, 5, 2, 4, 30.0, "r", 90.0)
    assert M.parse("qaoa g --mode both", None)[1].mode == "both"
    from mpiq_magic.qaoa.magic import options_of

    assert options_of(args) == {"p": 2, "eta": 0.03, "k": 3, "shots": 64, "final_shots": 128, "maxiter": 5,
                                "grid": 2, "merge": "qaoa", "seed": 4, "max_part": 6}


@pytest.mark.parametrize("line, expected", [
    ("qaoa", "the following arguments are required: GRAPH"),
    ("qaoa g -p 0", "argument -p: expected a positive integer, got 0"),
    ("qaoa g --mode clever", "invalid choice: 'clever'"),
    ("qaoa g --out 1x", "'1x' is not a Python variable name"),
    ("qaoa g --shots many", "expected a positive integer, got 'many'"),
])
def test_qaoa_magic_usage_errors(line, expected):
    from IPython.core.error import UsageError as IPythonUsageError

    from mpiq_magic import magics as M

    with pytest.raises(IPythonUsageError, match=expected) as err:
        M.parse(line, None)
    assert "usage: %mpiq qaoa [--mode {aware,naive,both}] [--naive] [-p P]" in str(err.value)


def test_qaoa_magic_needs_a_cluster_and_a_graph(tmp_path):
    from IPython.core.error import UsageError as IPythonUsageError

    from mpiq_magic import magics as M
    from mpiq_magic.qaoa.magic import resolve_graph

    # the magics object without a shell (the global test shell belongs to test_magics_parsing)
    with pytest.raises(IPythonUsageError, match="No hybrid cluster is running"):
        M.MPIQMagics(shell=None).mpiq("qaoa g")
    g = nx.cycle_graph(5)
    assert nx.utils.graphs_equal(resolve_graph("g", {"g": g}), as_graph(g))
    assert resolve_graph("e", {"e": [(0, 1), (1, 2)]}).number_of_edges() == 2
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"nodes": 3, "edges": [[0, 1], [1, 2]]}))
    assert resolve_graph(str(path), {}).number_of_nodes() == 3
    with pytest.raises(UsageError, match="GRAPH 'nothing' is neither a variable of this notebook nor a graph file"):
        resolve_graph("nothing", {"g": g})
    with pytest.raises(UsageError, match="A graph must be"):
        resolve_graph("x", {"x": 3.5})


def _traces(fig, prefix):
    return {t.meta: t for t in fig.data if str(t.meta).startswith(prefix)}


def test_qaoa_view_follows_a_run_and_shows_regions():
    """The live view fed by ``on_plan``/``on_iteration``: energies per part equal the result's
    histories, the graph is coloured by part and device, regions sit on the coupling maps."""
    from mpiq_magic.widgets import QAOAWidget, qaoa_figure
    from mpiq_magic.widgets.qaoa import device_symbol, part_color

    devices = [DeviceSpec("127.0.0.1", 0, num_qubits=10, seed=3, coupling="line"),
               DeviceSpec("127.0.0.1", 1, num_qubits=6, seed=4)]
    g = regular_graph(10, 3, seed=5)
    view = QAOAWidget(g, devices, eta=0.05, label="aware", mode="static")
    seen_plan = []
    view_plan = view.plan
    result = distributed_qaoa(g, devices, p=1, k=2, seed=2, maxiter=4, grid=2, shots=64, final_shots=128, max_part=5,
                              on_plan=lambda s, parts: (seen_plan.append(len(view.energies)), view_plan(s, parts)),
                              on_iteration=view.iteration)
    assert seen_plan == [0]  # the plan came before any energy
    view.set_result(result)
    assert view.energies == {s.index: s.energy_history for s in result.subproblems}
    assert all(len(s.energy_history) == s.evaluations > 0 for s in result.subproblems)
    for fig in (view.figure(), qaoa_figure(result, g, devices)):
        energy = _traces(fig, "mpiq-qaoa-energy-")
        assert {m: list(t.y) for m, t in energy.items()} == {
            f"mpiq-qaoa-energy-{s.index}": s.energy_history for s in result.subproblems}
        for s in result.subproblems:
            nodes = fig.data[[t.meta for t in fig.data].index(f"mpiq-qaoa-part-{s.index}")]
            assert sorted(int(x) for x in nodes.text) == sorted(s.nodes)
            assert nodes.marker.color == part_color(s.index) and nodes.marker.symbol == device_symbol(s.qrank)
            qubits = fig.data[[t.meta for t in fig.data].index(f"mpiq-qaoa-q{s.qrank}-qubits")]
            coloured = {q for q, c in enumerate(qubits.marker.color) if c == part_color(s.index)}
            assert coloured == {q for r in s.regions for q in r}
            assert len(s.regions) == (2 if s.qrank == 0 else 1)  # 10 qubits hold 2 regions of 5, 6 hold 1
        cut = fig.data[[t.meta for t in fig.data].index("mpiq-qaoa-cut-edges")]
        assert len(cut.x) == 3 * len(result.split.cut_edges)
    text = view.summary()
    assert f"cut {result.cut:g} of {result.optimum:g} (brute force)" in text and "2 part(s) on 2 monitor(s)" in text


@needs_fakes
def test_qaoa_view_crosses_out_what_eta_removes():
    from mpiq_magic.widgets import QAOAWidget

    cal = load_calibration("FakeCairoV2")
    spec = calibrated_device("127.0.0.1", 0, "FakeCairoV2")
    view = QAOAWidget(nx.cycle_graph(6), [spec], eta=0.02, mode="static")
    fig = view.figure()
    qubits = fig.data[[t.meta for t in fig.data].index("mpiq-qaoa-q0-qubits")]
    crossed = {q for q, s in enumerate(qubits.marker.symbol) if s == "x"}
    assert crossed == {q for q in range(27) if cal.readout_error[q] > 0.02} and crossed
    removed = fig.data[[t.meta for t in fig.data].index("mpiq-qaoa-q0-removed-couplings")]
    usable = usable_graph(device_errors(cal), 0.02)
    assert len(removed.x) == 3 * len(usable.removed_couplings) > 0


# ---------------------------------------------------------------- %mpiq qaoa in a real kernel

@pytest.mark.mpi
@pytest.mark.timeout(420)
def test_qaoa_magic_in_a_real_kernel(kernel_session):
    """``%mpiq qaoa`` on a real cluster (1 classical + 2 monitors) in a real Jupyter kernel: the
    result lands in the notebook, and the view's figure (the static form nbclient receives) shows
    exactly the result's energy history per part, the parts and the regions on each monitor."""
    def ok(source):
        result = kernel_session.run(source)
        assert result.error is None, f"cell failed:\n{source}\n{result.error_text}"
        return result

    started = "started" in ok(
        "from mpiq_magic.magics import active_cluster\n"
        "if active_cluster() is None or not active_cluster().running:\n"
        "    get_ipython().run_line_magic('mpiq', 'start -c 1 -q 2 --timeout 120')\n"
        "    print('started')").text
    try:
        ok("from mpiq_magic.qaoa import regular_graph, cut_value\ng = regular_graph(10, 3, seed=5)")
        res = ok("%mpiq qaoa g --max-part 5 --maxiter 4 --grid 2 --shots 64 --final-shots 128 --seed 2 --out qr")
        assert "(brute force), ratio " in res.text and "parts [5, 5] on qranks [0, 1]" in res.text, res.text
        assert "The QAOAResult is `qr`." in res.text
        figures = [o["data"]["application/vnd.plotly.v1+json"] for o in res.outputs
                   if "application/vnd.plotly.v1+json" in o.get("data", {})]
        assert figures, "the QAOA view showed no figure"
        traces = {t.get("meta"): t for t in figures[-1]["data"]}
        facts = json.loads(ok(
            "import json\n"
            "assert qr.cut == cut_value(g, qr.assignment) and qr.ratio >= 0.5\n"
            "assert [w['payloads_sent'] for w in qr.wire[1:]] == [0] * (len(qr.wire) - 1), qr.wire\n"
            "print(json.dumps({'history': {s.index: s.energy_history for s in qr.subproblems},\n"
            "                  'nodes': {s.index: s.nodes for s in qr.subproblems},\n"
            "                  'regions': {s.index: [s.qrank, s.regions] for s in qr.subproblems}}))").text)
        assert len(facts["history"]) == 2 and all(len(h) >= 2 for h in facts["history"].values())
        for part, history in facts["history"].items():
            assert traces[f"mpiq-qaoa-energy-{part}"]["y"] == history  # live data == the result
            assert sorted(int(t) for t in traces[f"mpiq-qaoa-part-{part}"]["text"]) == sorted(facts["nodes"][part])
            qrank, regions = facts["regions"][part]
            colour = traces[f"mpiq-qaoa-part-{part}"]["marker"]["color"]
            qubits = traces[f"mpiq-qaoa-q{qrank}-qubits"]["marker"]["color"]
            assert {q for q, c in enumerate(qubits) if c == colour} == {q for r in regions for q in r}
            assert len(regions) == 2  # 128-qubit line devices hold k=2 regions of 5
    finally:
        if started:
            ok("%mpiq stop")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_milp_maxcut_is_exact(seed):
    """The MILP optimum equals brute force (16 nodes, weighted too); at 40 nodes it is proven and
    at least the one-exchange heuristic."""
    from mpiq_magic.qaoa import heuristic_maxcut, milp_maxcut

    g = regular_graph(16, 3, seed=seed)
    for u, v in list(g.edges)[::3]:
        g[u][v]["weight"] = 2.5
    value, side, proven = milp_maxcut(g)
    assert proven and value == brute_force_maxcut(g)[0] == cut_value(g, side)
    big = regular_graph(40, 3, seed=seed)
    value, side, proven = milp_maxcut(big)
    assert proven and value == cut_value(big, side) >= heuristic_maxcut(big)
    from mpiq_magic.qaoa import classical_baseline

    assert classical_baseline(big) == (value, "exact (MILP, HiGHS)")


def test_fixed_angles_sample_once_without_optimizing():
    devices = [DeviceSpec("127.0.0.1", i, num_qubits=6, seed=30 + i) for i in range(2)]
    g = regular_graph(10, 3, seed=2)
    r = distributed_qaoa(g, devices, max_part=5, final_shots=64, angles={0: [0.6, 0.35], 1: [0.7, 0.3]})
    assert r.calls == 1 and [s.evaluations for s in r.subproblems] == [0, 0]
    assert [s.params for s in r.subproblems] == [{"gamma[0]": 0.6, "beta[0]": 0.35}, {"gamma[0]": 0.7, "beta[0]": 0.3}]
    with pytest.raises(UsageError, match=r"angles must be 2 numbers .* got \[0.6\]"):
        distributed_qaoa(g, devices, max_part=5, angles=[0.6])
    with pytest.raises(UsageError, match="angles has no entry for part 1"):
        distributed_qaoa(g, devices, max_part=5, angles={0: [0.6, 0.3]})


def test_qaoa_in_qaoa_merge_finds_the_best_orientation():
    """merge="qaoa": the parts' orientations come from a QAOA on the graph of parts (run through
    the same executor); with 4 parts it samples the best of the 8 orientations, so the oriented
    cut equals the enumerated merge's on the same sub-solutions."""
    from mpiq_magic.qaoa.inqaoa import orientation_graph

    devices = [DeviceSpec("127.0.0.1", i, num_qubits=8, seed=40 + i) for i in range(2)]
    g = regular_graph(16, 3, seed=4)
    runs = {m: distributed_qaoa(g, devices, max_part=4, seed=3, maxiter=4, grid=1, shots=128, final_shots=128,
                                merge=m, local_search="boundary") for m in ("exact", "qaoa")}
    exact, quantum = runs["exact"], runs["qaoa"]
    assert len(exact.split.parts) == 4
    assert [s.best_assignment for s in quantum.subproblems] == [s.best_assignment for s in exact.subproblems]
    o = quantum.orientation
    assert o is not None and o.evaluations > 0 and o.value == o.best_value and 0 < o.p_best <= 1
    assert quantum.oriented_cut == exact.oriented_cut and quantum.cut == cut_value(g, quantum.assignment)
    assert quantum.calls == exact.calls + o.evaluations + 1  # the merge QAOA's steps and final sample
    assert quantum.wire[-1]["kind"] == "merge" and exact.orientation is None
    same, diff = np.array([[0, 2], [2, 0]]), np.array([[0, 5], [5, 0]])
    assert list(orientation_graph(same, diff).edges(data="weight")) == [(0, 1, 3.0)]
    with pytest.raises(UsageError, match="merge must be 'exact' or 'qaoa'"):
        distributed_qaoa(g, devices, merge="quantum")


def test_qaoa_view_in_widget_mode_updates_the_live_figure_in_place():
    """Widget mode: the FigureWidget is rebuilt once when the plan adds traces, then every
    iteration reaches it in place (each flush sends the energies so far)."""
    from mpiq_magic.widgets import QAOAWidget

    devices = [DeviceSpec("127.0.0.1", i, num_qubits=8, seed=3 + i) for i in range(2)]
    g = regular_graph(10, 3, seed=5)
    view = QAOAWidget(g, devices, eta=0.05, mode="widget")
    view.widget  # noqa: B018 - builds the panel
    before = len(view._fig.data)
    seen = []

    def step(i, energies):
        view.iteration(i, energies)
        view.flush()
        fig = view._fig
        seen.append({int(str(t.meta).rsplit("-", 1)[1]): list(t.y) for t in fig.data
                     if str(t.meta).startswith("mpiq-qaoa-energy-")} == view.energies)

    result = distributed_qaoa(g, devices, max_part=5, maxiter=4, grid=1, shots=32, final_shots=32,
                              on_plan=view.plan, on_iteration=step)
    view.set_result(result)
    view.flush()
    assert len(view._fig.data) > before and seen and all(seen) and view.throttle.last_error is None
    assert "cut" in view._header.value and view._fig.layout.title.text.startswith("QAOA MaxCut (aware)")
    view.release()
