"""The reliability probe: bad inputs, interruptions and hostile files, tried as a new user or an attacker would.

Each probe runs in a fresh subprocess (so a segfault is counted, not suffered) inside a scratch folder, and is
judged by what a user would see:

    GOOD         a clear one-line error (exit 2, no traceback) or the right result
    TRACEBACK    a Python traceback reached the user
    SILENT       exit 0 (or a number) where the input was wrong: a silent wrong result or lost work
    CRASH        killed by a signal (segfault, abort)
    CODE-EXEC    a file the user was handed ran code (the probe's marker file appeared)

    python benchmarks/probes.py                    # all probes: table + benchmarks/results/probes.json
    python benchmarks/probes.py --only md          # probes whose name contains "md"

Cheap versions of these cases also run as tests; this report covers the whole list (about 5 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ETHANOL = ROOT / "systems" / "ethanol" / "dft.extxyz"
MARKER = "PROBE_MARKER_CODE_RAN"
HARTREE_EV = 27.211386245988


@dataclass
class Probe:
    """One case: ``make(work)`` returns the command to run in ``work``; ``expect`` is "error" (the input is
    wrong and must be refused with one line) or "ok" (the command must succeed; a script may print BAD:...)."""

    name: str
    issue_item: str
    make: Callable[[Path], List[str]]
    expect: str = "error"  # or "ok", "ok-or-error", "report" (problems listed on stdout, exit code not 0)
    pattern: Optional[str] = None  # the error line must contain this (case-insensitive)
    timeout_s: float = 300.0


def mlpot(*args: str) -> List[str]:
    return [sys.executable, "-m", "mlpot.cli", *args]


def script(code: str) -> List[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


# ------------------------------------------------------------------------------------------ fixtures
def prepare(work: Path) -> None:
    """Files every probe may use: small models, data, a hostile pickle, a tiny training run."""
    env_run(mlpot("new-model", "--arch", "egnn", "--species", "H,C,N,O", "--hp", "hidden=8", "--hp", "num_layers=1",
                  "-o", str(work / "model.pt")), work)
    env_run(mlpot("new-model", "--arch", "nequip", "--species", "H,C,N,O", "--hp", "num_features=4",
                  "--hp", "num_layers=1", "--hp", "lmax=1", "-o", str(work / "nequip.pt")), work)
    env_run(mlpot("new-model", "--arch", "egnn", "--species", "H,C,O", "--hp", "hidden=8", "--hp", "num_layers=1",
                  "--seed", "3", "--energy-scale", "1e-9", "-o", str(work / "other.pt")), work)
    # for MD probes: an untrained network with (almost) no forces, so that ethanol stays whole at 20 K
    env_run(mlpot("new-model", "--arch", "egnn", "--species", "H,C,N,O", "--hp", "hidden=8", "--hp", "num_layers=1",
                  "--energy-scale", "1e-9", "-o", str(work / "md_model.pt")), work)
    import ase.io

    frames = ase.io.read(str(ETHANOL), ":24")
    ase.io.write(str(work / "small.extxyz"), frames)
    for atoms in frames:  # Hartree labelled as eV: energies and forces 27.2x too small
        atoms.calc.results["energy"] = atoms.get_potential_energy() / HARTREE_EV
        atoms.calc.results["forces"] = atoms.get_forces() / HARTREE_EV
    ase.io.write(str(work / "hartree.extxyz"), frames)
    (work / "hostile.py").write_text(textwrap.dedent(f"""
        import os, torch
        class Payload:
            def __reduce__(self):
                return (os.system, ("touch {work / MARKER}",))
        torch.save({{"checkpoint_version": 1, "payload": Payload()}}, "{work / 'hostile.pt'}")
    """))
    env_run([sys.executable, str(work / "hostile.py")], work)
    write_config(work / "train.yaml", work / "run")


def write_config(path: Path, out: Path, **training) -> None:
    settings = {"epochs": 1, "batch_size": 4, "warmup_steps": 1, **training}
    lines = ["data:", f"  files: [{path.parent / 'small.extxyz'}]", "  val_fraction: 0.15", "  test_fraction: 0.15",
             "model:", "  arch: egnn", "  hyperparameters: {hidden: 8, num_layers: 1}", "training:"]
    lines += [f"  {key}: {value}" for key, value in settings.items()]
    lines.append(f"out: {out}")
    path.write_text("\n".join(lines) + "\n")


def env_run(command: List[str], work: Path, timeout_s: float = 600.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1")
    return subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=timeout_s, env=env)


# ------------------------------------------------------------------------------------------- probes
def hostile_run_folder(work: Path, name: str) -> Path:
    folder = work / name
    folder.mkdir(exist_ok=True)
    shutil.copy(work / "hostile.pt", folder / "checkpoint.pt")
    return folder


def stable_config(work: Path, parent: Path, out: Path) -> Path:
    path = work / f"stable_{out.name}.yaml"
    path.write_text(textwrap.dedent(f"""
        parent: {parent}
        data:
          system: ethanol
        out: {out}
    """))
    return path


def _md(work: Path, *extra: str, steps: int = 20, model: str = "md_model.pt") -> List[str]:
    """``mlpot md`` of ethanol: 10 fs at 1 K with a force-free model, so that nothing moves far enough to trip
    the blow-up checks (the probes of those set their own model and temperature)."""
    return mlpot("md", "--model", str(work / model), "--system", "ethanol", "--steps", str(steps),
                 "--report-interval", "10", "--temperature", "1", "--quiet", *extra)


def _edit_model(kind: str) -> Callable[[Path], List[str]]:
    def make(work: Path) -> List[str]:
        return script(f"""
            import json, zipfile, shutil
            source, edited = "{work / 'model.pt'}", "{work / ('edited_' + kind + '.pt')}"
            with zipfile.ZipFile(source) as old, zipfile.ZipFile(edited, "w") as new:
                for item in old.infolist():
                    data = old.read(item.filename)
                    if "{kind}" == "code" and "/code/" in item.filename and item.filename.endswith(".py"):
                        text = data.decode()
                        edited_text = text.replace("return energy", "return 3.0 * energy", 1)
                        data = (edited_text if "return energy" in text else text + "\\n").encode()
                    if item.filename.endswith("extra/mlpot_metadata.json") and "{kind}" != "code":
                        meta = json.loads(data)
                        if "{kind}" == "cutoff": meta["cutoff"] = 9.0
                        if "{kind}" == "shift": meta["energy_shift"][0] += 1.0
                        if "{kind}" == "species": meta["species"][:2] = meta["species"][1::-1]
                        data = json.dumps(meta).encode()
                    new.writestr(item, data)
            import subprocess, sys
            result = subprocess.run([sys.executable, "-m", "mlpot.cli", "info", edited], capture_output=True, text=True)
            sys.stderr.write(result.stderr); sys.stdout.write(result.stdout); sys.exit(result.returncode)
        """)
    return make


OPENMM_PRELUDE = """
import openmm, openmm.app as app, copy, sys
from mlpot.plugins.openmm import create_force
pdb = app.PDBFile("{pdb}")
system = openmm.System()
for atom in pdb.topology.atoms():
    system.addParticle(atom.element.mass)
"""


def _openmm(work: Path, body: str) -> List[str]:
    """A script using the Python API: an exception the API raises on purpose counts as its one-line error."""
    pdb = ROOT / "systems" / "ethanol" / "ethanol.pdb"
    body = textwrap.indent(textwrap.dedent(body).replace("MODEL", str(work / "model.pt")), "    ")
    code = (textwrap.dedent(OPENMM_PRELUDE).format(pdb=pdb) + "try:\n" + body
            + "\nexcept (ValueError, RuntimeError, TypeError, openmm.OpenMMException) as error:\n"
            + "    print(f'error: {error}', file=sys.stderr); sys.exit(2)\n")
    return [sys.executable, "-c", code]


def _energy_of(body: str) -> str:
    return textwrap.dedent(body) + textwrap.dedent("""
        integrator = openmm.VerletIntegrator(0.001)
        context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(pdb.positions)
        print(context.getState(getEnergy=True).getPotentialEnergy())
    """)


def _numerics(body: str) -> Callable[[Path], List[str]]:
    def make(work: Path) -> List[str]:
        return script(f"""
            import torch, sys
            from mlpot.deploy import load_model
            model = load_model("{work / 'model.pt'}")
            from mlpot.systems import load_atoms
            atoms = load_atoms("ethanol")
            positions = torch.tensor(atoms.positions, dtype=torch.float32)
            numbers = torch.tensor(atoms.numbers)
            cell, pbc = torch.zeros(3, 3), torch.zeros(3, dtype=torch.bool)
            try:
        """ + textwrap.indent(textwrap.dedent(body), " " * 16) + """
            except ValueError as error:
                print(f"error: {error}", file=sys.stderr); sys.exit(2)
        """)
    return make


def _train_with(**training) -> Callable[[Path], List[str]]:
    def make(work: Path) -> List[str]:
        name = "_".join(f"{k}{v}" for k, v in training.items()).replace(" ", "").replace("-", "m")
        config = work / f"train_{name}.yaml"
        write_config(config, work / f"run_{name}", **training)
        return mlpot("train", str(config))
    return make


def _two_trainers(work: Path) -> List[str]:
    config = work / "train_lock.yaml"
    write_config(config, work / "run_lock", epochs=100000, max_time_minutes=2)
    return script(f"""
        import signal, subprocess, sys, time, pathlib
        cmd = [sys.executable, "-m", "mlpot.cli", "train", "{config}", "--quiet"]
        first = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        log = pathlib.Path("{work / 'run_lock' / 'log.csv'}")
        while not log.exists() and first.poll() is None:  # the first run is training (one epoch done)
            time.sleep(0.5)
        second = subprocess.run(cmd, capture_output=True, text=True)
        first.send_signal(signal.SIGTERM)
        first.wait()
        sys.stderr.write(second.stderr)
        sys.exit(second.returncode if first.returncode == 130 else 1)
    """)


def _md_resume_changed(flag: str, value: str) -> Callable[[Path], List[str]]:
    def make(work: Path) -> List[str]:
        out = work / f"resume_{flag.strip('-')}.dcd"
        first = env_run(_md(work, "--out", str(out)), work)
        if first.returncode != 0:
            return script(f"import sys; sys.stderr.write({('setup failed: ' + first.stderr[-300:])!r}); sys.exit(3)")
        changed = {"--timestep": ["--timestep", value], "--temperature": ["--temperature", value],
                   "--model": []}[flag]
        command = _md(work, "--out", str(out), "--resume", *changed, steps=40)
        if flag == "--model":
            command[command.index("--model") + 1] = str(work / "other.pt")
        return command
    return make


def _md_truncated_chk(work: Path) -> List[str]:
    out = work / "trunc.dcd"
    env_run(_md(work, "--out", str(out)), work)
    for chk in work.glob("trunc*.chk"):
        chk.write_bytes(chk.read_bytes()[:300])
    return _md(work, "--out", str(out), "--resume", steps=40)


def _md_existing_trajectory(work: Path) -> List[str]:
    out = work / "exists.dcd"
    env_run(_md(work, "--out", str(out)), work)
    return _md(work, "--out", str(out))


def _pips_existing(work: Path) -> List[str]:
    out = work / "pips_dw"
    env_run(mlpot("pips", "train", "--system", "double-well", "--out", str(out), "--iterations", "2", "--paths", "8",
                  "--quiet"), work)
    return mlpot("pips", "train", "--system", "double-well", "--out", str(out), "--iterations", "2", "--paths", "8")


def _stress_untouched(work: Path) -> List[str]:  # not a probe of an error: the model must know every element
    return mlpot("info", str(work / "model.pt"))


PROBES: List[Probe] = [
    # 1. hostile checkpoints: no command may unpickle code
    Probe("checkpoint/train-resume", "1", lambda w: mlpot("train", "--data", str(w / "small.extxyz"), "--out",
          str(hostile_run_folder(w, "h_train")), "--resume"), pattern="not"),
    Probe("checkpoint/stable-parent", "1", lambda w: mlpot("stable", str(stable_config(w, w / "hostile.pt",
          w / "h_stable")))),
    Probe("checkpoint/pips-train-resume", "1", lambda w: mlpot("pips", "train", "--out",
          str(hostile_run_folder(w, "h_pips")), "--resume")),
    Probe("checkpoint/pips-sample", "1", lambda w: mlpot("pips", "sample", str(hostile_run_folder(w, "h_sample")),
          "--paths", "2")),
    Probe("checkpoint/pips-report", "1", lambda w: mlpot("pips", "report", str(hostile_run_folder(w, "h_report")),
          "--paths", "2")),
    # 2. model files sealed whole
    Probe("model/edited-code", "2", _edit_model("code"), pattern="seal"),
    Probe("model/edited-cutoff", "2", _edit_model("cutoff"), pattern="seal"),
    Probe("model/edited-energy-shift", "2", _edit_model("shift"), pattern="seal"),
    Probe("model/edited-species", "2", _edit_model("species"), pattern="seal"),
    Probe("model/truncated", "2", lambda w: script(f"""
        data = open("{w / 'model.pt'}", "rb").read(); open("{w / 'cut.pt'}", "wb").write(data[:len(data) // 2])
        import subprocess, sys; r = subprocess.run([sys.executable, "-m", "mlpot.cli", "info", "{w / 'cut.pt'}"],
            capture_output=True, text=True); sys.stderr.write(r.stderr); sys.exit(r.returncode)""")),
    # 3. the OpenMM plugin
    Probe("openmm/empty-atoms", "3", lambda w: _openmm(w, _energy_of(
        "system.addForce(create_force('MODEL', pdb.topology, atoms=[]))")), pattern="atoms"),
    Probe("openmm/atom-index-out-of-range", "3", lambda w: _openmm(w, _energy_of(
        "system.addForce(create_force('MODEL', pdb.topology, atoms=[0, 1, 99]))")), pattern="range"),
    Probe("openmm/float-atom-indices", "3", lambda w: _openmm(w, _energy_of(
        "system.addForce(create_force('MODEL', pdb.topology, atoms=[0.0, 1.7, 2.2]))")), pattern="integer"),
    Probe("openmm/atomic-numbers-wrong-length", "6", lambda w: _openmm(w, _energy_of(
        "system.addForce(create_force('MODEL', atomic_numbers=[6, 6, 8]))")), pattern="atomic_numbers"),
    Probe("openmm/atomic-numbers-against-topology", "6", lambda w: _openmm(w, _energy_of(
        "system.addForce(create_force('MODEL', pdb.topology, atomic_numbers=[8] * pdb.topology.getNumAtoms()))")),
          pattern="topology"),
    Probe("openmm/deepcopy-system", "3", lambda w: _openmm(w, """
        system.addForce(create_force('MODEL', pdb.topology))
        copied = copy.deepcopy(system)
        print("BAD: copied" if copied.getNumForces() != 1 else "ok")"""), expect="ok-or-error"),
    Probe("openmm/deserialize-system", "3", lambda w: _openmm(w, """
        system.addForce(create_force('MODEL', pdb.topology))
        text = openmm.XmlSerializer.serialize(system)
        again = openmm.XmlSerializer.deserialize(text)
        print("ok", again.getNumForces())"""), expect="ok-or-error"),
    Probe("openmm/import-openmm-first", "16", lambda w: _openmm(w, _energy_of(
        "system.addForce(create_force('MODEL', pdb.topology))")), expect="ok"),
    # 4. blow-ups
    Probe("md/timestep-100-openmm", "4", lambda w: _md(w, "--timestep", "100", "--temperature", "300", "--out",
          str(w / "blow_omm.dcd"), "--platform", "Reference", model="model.pt"), pattern="unstable"),
    Probe("md/timestep-100-ase", "4", lambda w: _md(w, "--timestep", "100", "--temperature", "300", "--engine", "ase",
          "--out", str(w / "blow_ase.dcd"), model="model.pt"), pattern="unstable"),
    Probe("md/negative-temperature", "12", lambda w: _md(w, "--temperature", "-5", "--out", str(w / "neg.dcd"))),
    Probe("md/negative-timestep", "12", lambda w: _md(w, "--timestep", "-1", "--out", str(w / "negdt.dcd"))),
    Probe("md/bad-platform", "12", lambda w: _md(w, "--platform", "Quantum", "--out", str(w / "plat.dcd"))),
    # 5. units
    Probe("units/hartree-inspect", "5", lambda w: mlpot("data", "inspect", str(w / "hartree.extxyz")),
          expect="report", pattern="hartree"),
    Probe("units/hartree-train", "5", lambda w: mlpot("train", "--data", str(w / "hartree.extxyz"), "--arch", "egnn",
          "--epochs", "1", "--out", str(w / "run_hartree")), pattern="hartree"),
    Probe("units/hartree-eval", "5", lambda w: mlpot("eval", str(w / "model.pt"), "--data", str(w / "hartree.extxyz"),
          "--out", str(w / "eval_hartree")), pattern="hartree"),
    Probe("units/real-data-not-flagged", "5", lambda w: mlpot("data", "inspect", str(ETHANOL)), expect="ok"),
    # 7. resume refuses what it cannot continue
    Probe("md/resume-other-timestep", "7", _md_resume_changed("--timestep", "0.25"), pattern="timestep"),
    Probe("md/resume-other-temperature", "7", _md_resume_changed("--temperature", "400"), pattern="temperature"),
    Probe("md/resume-other-model", "7", _md_resume_changed("--model", ""), pattern="model"),
    Probe("md/resume-truncated-chk", "7", _md_truncated_chk, pattern="chk"),
    Probe("md/new-run-over-existing-trajectory", "7", _md_existing_trajectory, pattern="overwrite"),
    # 8. runs lost or mixed up
    Probe("pips/train-into-existing-run", "8", _pips_existing, pattern="resume"),
    Probe("pips/iterations-0", "8", lambda w: mlpot("pips", "train", "--system", "double-well", "--out",
          str(w / "pips_zero"), "--iterations", "0")),
    Probe("pips/max-minutes-negative", "8", lambda w: mlpot("pips", "train", "--system", "double-well", "--out",
          str(w / "pips_neg"), "--max-minutes", "-1")),
    Probe("train/two-processes-one-folder", "8", _two_trainers, pattern="in use"),
    # 10. numerics
    Probe("numerics/coincident-atoms", "10", _numerics("""
        positions[1] = positions[0]
        result = model.compute(positions, numbers, cell, pbc)
        print(result["energy"])"""), pattern="atoms 0 and 1"),
    Probe("numerics/coordinates-1e8", "10", _numerics("""
        result = model.compute(positions + 1e8, numbers, cell, pbc)
        print(result["energy"])""")),
    Probe("numerics/shift-1e4-invariance", "10", _numerics("""
        a = model.compute(positions, numbers, cell, pbc)["forces"]
        b = model.compute(positions + 1e4, numbers, cell, pbc)["forces"]
        change = float((a - b).abs().max()) * 1000
        print(("BAD: " if change > 1.0 else "") + f"force change {change:.3g} meV/A")"""), expect="ok"),
    # 11. settings that deploy an untrained model
    Probe("config/batch-size-negative", "11", _train_with(batch_size=-4), pattern="batch_size"),
    Probe("config/lr-true", "11", _train_with(lr="true"), pattern="lr"),
    Probe("config/epochs-0", "11", _train_with(epochs=0), pattern="epochs"),
    Probe("config/lr-string", "11", _train_with(lr="fast"), pattern="lr"),
    # 12. one-line errors
    Probe("cli/unwritable-out", "12", lambda w: mlpot("new-model", "--arch", "egnn", "--species", "H", "-o",
          "/proc/forbidden/model.pt")),
    Probe("cli/zero-atoms", "12", _numerics("""
        result = model.compute(positions[:0], numbers[:0], cell, pbc)
        print(result["energy"])""")),
    Probe("cli/zero-cell-with-pbc", "12", _numerics("""
        result = model.compute(positions, numbers, torch.zeros(3, 3), torch.ones(3, dtype=torch.bool))
        print(result["energy"])""")),
    Probe("cli/empty-chk", "12", lambda w: (Path(w / "empty.dcd.chk").write_bytes(b""),
                                           _md(w, "--out", str(w / "empty.dcd"), "--resume"))[1]),
]


# ------------------------------------------------------------------------------------------ judging
def judge(probe: Probe, result: subprocess.CompletedProcess, work: Path) -> str:
    if (work / MARKER).exists():
        (work / MARKER).unlink()
        return "CODE-EXEC"
    if result.returncode < 0:
        return "CRASH"
    if result.returncode == 3 and "setup failed" in result.stderr:
        return "SETUP-FAILED"  # the probe could not build its case: a fault of the probe, not a verdict
    text = result.stdout + result.stderr
    if "Traceback (most recent call last)" in text:
        return "TRACEBACK"
    if "BAD:" in result.stdout:
        return "SILENT"
    if probe.expect == "ok":
        return "GOOD" if result.returncode == 0 else "TRACEBACK" if "Error" in text else "BAD-EXIT"
    if probe.expect == "ok-or-error" and result.returncode == 0:
        return "GOOD"
    if probe.expect == "report":  # a report of problems on stdout, and a failing exit code
        found = probe.pattern is None or probe.pattern.lower() in result.stdout.lower()
        return "GOOD" if result.returncode != 0 and found else "SILENT"
    if result.returncode == 0:
        return "SILENT"
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    if not lines:
        return "SILENT"
    if probe.pattern and probe.pattern.lower() not in lines[-1].lower():
        return "UNCLEAR"
    return "GOOD"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="run the probes whose name contains this text")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlpot-probes-"))
    started = time.time()
    prepare(work)
    rows: List[Dict[str, str]] = []
    for probe in PROBES:
        if args.only and args.only not in probe.name:
            continue
        began = time.time()
        try:
            result = env_run(probe.make(work), work, probe.timeout_s)
            verdict = judge(probe, result, work)
            lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
            shown = lines[-1][:160] if lines else f"(exit {result.returncode}, no output)"
        except subprocess.TimeoutExpired:
            verdict, shown = "TIMEOUT", f"over {probe.timeout_s:.0f} s"
        rows.append({"probe": probe.name, "issue_item": probe.issue_item, "verdict": verdict, "seen": shown,
                     "seconds": f"{time.time() - began:.1f}"})
        print(f"{verdict:<10} {probe.name:<42} {shown}", flush=True)
    counts: Dict[str, int] = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    print("\n" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"  ({len(rows)} probes, "
          f"{time.time() - started:.0f} s)")
    if args.only is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "probes.json").write_text(json.dumps({"counts": counts, "probes": rows}, indent=1) + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"scratch folder: {work}")
    return 0 if set(counts) <= {"GOOD"} else 1


if __name__ == "__main__":
    sys.exit(main())
