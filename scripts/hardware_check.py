"""Check, read-only, that an installed capctl agrees with a real NVIDIA driver.

    python scripts/hardware_check.py --capctl BIN [--root DIR] [--topology FILE]
                                     [--smi-output FILE]

Run by ``scripts/hardware-check.sh`` on a machine with a GPU; the tests run it on the
simulated host.  It reads the driver's files itself (the facts are in docs/driver.md) and
compares them with what ``capctl`` reports, one verdict line a check:

- ``doctor``: runs, answers JSON, and finds the driver loaded;
- ``list``: every capability of ``/proc/driver/nvidia-caps/*-minors`` with its minor, which of
  them exist (their files under ``/proc/driver/nvidia*/capabilities``), and each node's state
  against ``/dev/nvidia-caps`` and the ``nvidia-caps`` major in ``/proc/devices``;
- ``topology``: the GPUs and MIG devices of ``capctl topology --json`` (NVML) against
  ``nvidia-smi -L``, and each GPU's minor against ``/proc/driver/nvidia/gpus/*/information``;
- ``resolve``: every GPU and MIG device that ``nvidia-smi -L`` lists, by UUID and by index,
  resolves to that device, its parent GPU's node, and GI/CI capabilities that exist;
- ``sync``: ``sync --dry-run`` (with no grants) would widen no node's access.

It never writes: capctl runs only read-only commands, with an empty config of its own.
Exit 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OK, FAIL, SKIP = "ok", "FAIL", "skip"


@dataclass
class Verdict:
    check: str
    level: str
    summary: str
    details: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        head = f"[{self.level:>4}] {self.check}: {self.summary}"
        return [head, *(f"         {d}" for d in self.details[:20])] + (
            [f"         ... and {len(self.details) - 20} more"] if len(self.details) > 20 else []
        )


class Capctl:
    """The installed ``capctl`` command, with the host options every call shares."""

    def __init__(self, binary: str, root: str, topology: str | None, config: str) -> None:
        self.base = [binary, "--root", root, "--config", config]
        if topology is not None:
            self.base += ["--topology", topology]
        self.answers: dict[tuple[str, ...], Any] = {}  # read-only commands: asked once

    def json(self, *args: str, codes: tuple[int, ...] = (0,)) -> Any:
        if args in self.answers:
            return self.answers[args]
        res = subprocess.run([*self.base, *args], capture_output=True, text=True, check=False)
        if res.returncode not in codes:
            raise CheckError(f"capctl {' '.join(args)} exited {res.returncode}: "
                             f"{res.stderr.strip()[-500:]}")
        try:
            self.answers[args] = json.loads(res.stdout)
        except ValueError as err:
            raise CheckError(f"capctl {' '.join(args)}: not JSON ({err})") from err
        return self.answers[args]


class CheckError(Exception):
    """A check could not be made: its verdict is FAIL with this text."""


# --- the driver's files, read here independently of capctl --------------------------------------


def under(root: str, path: str) -> Path:
    return Path(root) / path.lstrip("/")


def read_minors(root: str) -> dict[str, tuple[int, str]]:
    """Every ``name minor`` line of ``/proc/driver/nvidia-caps/*-minors``: name -> (minor,
    file name)."""
    found: dict[str, tuple[int, str]] = {}
    folder = under(root, "/proc/driver/nvidia-caps")
    for path in sorted(folder.glob("*-minors")):
        for line in path.read_text().splitlines():
            if line.strip():
                name, minor = line.split()
                found[name] = (int(minor), path.name)
    return found


def capability_file(root: str, name: str) -> Path:
    """Where the driver publishes capability ``name`` while it exists."""
    if name == "fabric-mgmt":
        return under(root, "/proc/driver/nvidia-nvlink/capabilities/fabric-mgmt")
    if name in ("config", "monitor"):
        return under(root, f"/proc/driver/nvidia/capabilities/mig/{name}")
    m = re.fullmatch(r"gpu(\d+)/(gi\d+(?:/ci\d+)?/access)", name)
    if m:
        return under(root, f"/proc/driver/nvidia/capabilities/gpu{m[1]}/mig/{m[2]}")
    return under(root, f"/proc/driver/nvidia/capabilities/{name}")


def read_capability(path: Path) -> dict[str, int]:
    """``DeviceFileMinor``, ``DeviceFileMode``, ``DeviceFileModify`` of a capability file."""
    fields = {}
    for line in path.read_text().splitlines():
        key, _sep, value = line.partition(":")
        fields[key.strip()] = int(value)
    return fields


def caps_major(root: str) -> int | None:
    """The ``nvidia-caps`` major of ``/proc/devices`` (character devices), None if absent."""
    text = under(root, "/proc/devices").read_text()
    chars = text.split("Character devices:", 1)[1].split("Block devices:", 1)[0]
    for line in chars.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == "nvidia-caps":
            return int(parts[0])
    return None


@dataclass
class SmiGpu:
    index: int
    uuid: str
    migs: dict[int, str]  # MIG device index -> uuid


_SMI_GPU = re.compile(r"^GPU (\d+): .*\(UUID: (GPU-[^)]+)\)\s*$")
_SMI_MIG = re.compile(r"^\s+MIG .*Device\s+(\d+): \(UUID: (MIG-[^)]+)\)\s*$")


def parse_smi(text: str) -> list[SmiGpu]:
    """``nvidia-smi -L``: ``GPU i: NAME (UUID: GPU-...)`` lines, each followed by its
    ``  MIG PROFILE Device j: (UUID: MIG-...)`` lines."""
    gpus: list[SmiGpu] = []
    for line in text.splitlines():
        if m := _SMI_GPU.match(line):
            gpus.append(SmiGpu(int(m[1]), m[2], {}))
        elif (m := _SMI_MIG.match(line)) and gpus:
            gpus[-1].migs[int(m[1])] = m[2]
        elif line.strip():
            raise CheckError(f"nvidia-smi -L: cannot read the line {line!r}")
    return gpus


# --- the checks ----------------------------------------------------------------------------------


def check_doctor(capctl: Capctl) -> Verdict:
    report = capctl.json("doctor", "--json", codes=(0, 1))  # 1: it found a gap
    items = [i for section in report.values() for i in section]
    counts = {lvl: sum(1 for i in items if i["level"] == lvl) for lvl in ("ok", "warn", "fail")}
    summary = f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail"
    notes = [f"{i['level']}: {i['what']}" for i in items if i["level"] != "ok"]
    driver = [i for i in report.get("driver", []) if i["level"] == "fail"]
    if driver:
        return Verdict("doctor", FAIL, f"the driver is not seen ({summary})", notes)
    # The host's own gaps (hooks not installed, nodes missing) are the admin's to fix: reported,
    # not a disagreement between capctl and the driver.
    return Verdict("doctor", OK, summary, notes)


def check_list(capctl: Capctl, root: str) -> Verdict:
    everything = capctl.json("list", "--json")
    listed = {c["name"]: c for c in everything if c["source"] != "stray"}
    minors = read_minors(root)
    problems: list[str] = []
    if not minors:
        return Verdict("list", FAIL, "no /proc/driver/nvidia-caps/*-minors to compare with")
    major = caps_major(root)
    strays = {c["path"] for c in everything if c["source"] == "stray"}
    on_disk = _strays(root, major)
    problems += [f"{p}: a stray node, not listed as one" for p in sorted(on_disk - strays)]
    problems += [f"{p}: listed as a stray node, is none" for p in sorted(strays - on_disk)]
    for name in sorted(minors.keys() - listed.keys()):
        problems.append(f"{name}: in {minors[name][1]}, not listed")
    for name in sorted(listed.keys() - minors.keys()):
        problems.append(f"{name}: listed, in no *-minors file")
    for name in sorted(minors.keys() & listed.keys()):
        cap, (minor, source) = listed[name], minors[name]
        if (cap["minor"], cap["source"]) != (minor, source):
            problems.append(f"{name}: listed as minor {cap['minor']} of {cap['source']}, "
                            f"the driver says {minor} of {source}")
        exists = capability_file(root, name).is_file()
        if cap["exists"] != exists:
            problems.append(f"{name}: listed exists={cap['exists']}, its capability file "
                            f"{'is' if exists else 'is not'} there")
        problems += _node_problem(root, cap, major, minor)
    existing = sum(1 for c in listed.values() if c["exists"])
    summary = (f"{len(listed)} capabilities ({existing} exist), nvidia-caps major {major}, "
               f"{len(strays)} stray nodes")
    return Verdict("list", FAIL if problems else OK, summary, problems)


def _strays(root: str, major: int | None) -> set[str]:
    """Nodes of ``/dev/nvidia-caps`` that open a capability under another name than its own."""
    found = set()
    folder = under(root, "/dev/nvidia-caps")
    for entry in os.scandir(folder) if folder.is_dir() else ():
        st = entry.stat(follow_symlinks=False)
        if (stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == major
                and entry.name != f"nvidia-cap{os.minor(st.st_rdev)}"):
            found.add(f"/dev/nvidia-caps/{entry.name}")
    return found


def _node_problem(root: str, cap: dict[str, Any], major: int | None, minor: int) -> list[str]:
    """Whether ``list``'s node state fits what ``/dev/nvidia-caps`` holds."""
    path = under(root, f"/dev/nvidia-caps/nvidia-cap{minor}")
    if cap["path"] != f"/dev/nvidia-caps/nvidia-cap{minor}":
        return [f"{cap['name']}: listed path {cap['path']}"]
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    right = (st is not None and stat.S_ISCHR(st.st_mode) and major is not None
             and st.st_rdev == os.makedev(major, minor))
    state = cap["node"]
    if st is None and state not in ("missing", "absent", "unmanaged"):
        return [f"{cap['name']}: listed node {state!r}, but {path} does not exist"]
    if st is not None and not right and state not in ("wrong", "unmanaged"):
        return [f"{cap['name']}: listed node {state!r}, but {path} is not char "
                f"{major}:{minor}"]
    return []


def smi_text(smi_output: str | None) -> str | None:
    if smi_output is not None:
        return Path(smi_output).read_text()
    if shutil.which("nvidia-smi") is None:
        return None
    res = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise CheckError(f"nvidia-smi -L exited {res.returncode}: {res.stderr.strip()}")
    return res.stdout


def check_topology(capctl: Capctl, root: str, smi: list[SmiGpu] | None) -> Verdict:
    topo = capctl.json("topology", "--json")
    gpus = topo["gpus"]
    problems: list[str] = []
    for gpu in gpus:
        info = _information(root, gpu["pci_bus_id"])
        if info is None:
            problems.append(f"GPU {gpu['index']}: no information file for {gpu['pci_bus_id']}")
        elif info != gpu["minor"]:
            problems.append(f"GPU {gpu['index']}: minor {gpu['minor']}, the driver's "
                            f"information file says {info}")
    migs = sum(len(g["mig_devices"]) for g in gpus)
    summary = f"{len(gpus)} GPUs, {migs} MIG devices"
    if smi is None:
        return Verdict("topology", FAIL if problems else OK,
                       summary + " (no nvidia-smi: minors checked only)", problems)
    ours = {g["index"]: (g["uuid"], {m["index"]: m["uuid"] for m in g["mig_devices"]})
            for g in gpus}
    theirs = {g.index: (g.uuid, g.migs) for g in smi}
    for index in sorted(ours.keys() | theirs.keys()):
        if ours.get(index) != theirs.get(index):
            problems.append(f"GPU {index}: capctl {ours.get(index)}, nvidia-smi "
                            f"{theirs.get(index)}")
    return Verdict("topology", FAIL if problems else OK, summary + ", as nvidia-smi -L",
                   problems)


def _information(root: str, bus_id: str) -> int | None:
    """The "Device Minor:" of the GPU at ``bus_id`` (NVML's 8-digit domain or the kernel's 4)."""
    domain, _sep, rest = bus_id.lower().partition(":")
    name = f"{int(domain, 16):04x}:{rest}"
    path = under(root, f"/proc/driver/nvidia/gpus/{name}/information")
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    m = re.search(r"^Device Minor:\s*(\d+)\s*$", text, re.M)
    return int(m[1]) if m else None


def check_resolve(capctl: Capctl, root: str, smi: list[SmiGpu] | None) -> Verdict:
    if smi is None:
        return Verdict("resolve", SKIP, "no nvidia-smi to name the devices")
    existing = {name for name in read_minors(root) if capability_file(root, name).is_file()}
    # Three requests, each naming every device once (capctl answers in request order):
    # whole GPUs by UUID, MIG devices by UUID, MIG devices as <gpu index>:<mig index>.
    batches: list[list[tuple[str, str, str | None]]] = [
        [(g.uuid, g.uuid, None) for g in smi],
        [(mig, mig, g.uuid) for g in smi for mig in g.migs.values()],
        [(f"{g.index}:{j}", mig, g.uuid) for g in smi for j, mig in g.migs.items()],
    ]
    problems: list[str] = []
    asked = 0
    for batch in (b for b in batches if b):
        asked += len(batch)
        try:
            devices = capctl.json("resolve", "--json", ",".join(r for r, _w, _p in batch))
        except CheckError:
            devices = None
        if devices is None or len(devices) != len(batch):
            # One at a time, to name the device at fault.
            devices = []
            for name, _want, _parent in batch:
                try:
                    devices += capctl.json("resolve", "--json", name)[:1] or [None]
                except CheckError as err:
                    problems.append(f"{name}: {err}")
                    devices.append(None)
        for (name, want, parent), dev in zip(batch, devices, strict=True):
            if dev is not None:
                problems += _resolve_problems(existing, name, dev, want, parent)
    summary = f"{asked} names, as nvidia-smi gives them"
    return Verdict("resolve", FAIL if problems else OK,
                   summary + (": each the device it names" if not problems else ""), problems)


def _resolve_problems(existing: set[str], request: str, dev: dict[str, Any], want: str,
                      parent: str | None) -> list[str]:
    problems = []
    if dev["uuid"] != want or dev["gpu_uuid"] != (parent or want):
        problems.append(f"{request}: resolved to {dev['uuid']} on {dev['gpu_uuid']}")
    if f"/dev/nvidia{dev['gpu_minor']}" not in dev["device_nodes"]:
        problems.append(f"{request}: device nodes {dev['device_nodes']} lack its GPU's")
    names = [c["name"] for c in dev["caps"]]
    if parent is None:
        if names:
            problems.append(f"{request}: a whole GPU, but capabilities {names}")
    else:
        gi = f"gpu{dev['gpu_minor']}/gi{dev['gi']}/access"
        ci = f"gpu{dev['gpu_minor']}/gi{dev['gi']}/ci{dev['ci']}/access"
        if names != [gi, ci]:
            problems.append(f"{request}: capabilities {names}, want [{gi}, {ci}]")
        problems += [f"{request}: capability {n} does not exist in the driver"
                     for n in names if n not in existing]
    return problems


def check_sync(capctl: Capctl, root: str) -> Verdict:
    report = capctl.json("sync", "--dry-run", "--json")
    by_path = {under(root, c["path"]): c for c in capctl.json("list", "--json")}
    major = caps_major(root)
    problems: list[str] = []
    created = repaired = 0
    for change in report["nodes"]:
        if change["action"] == "created":
            created += 1
        elif change["action"] == "repaired":
            repaired += 1
            problems += _widens(root, major, Path(change["path"]), by_path, change["reason"])
        elif change["action"] not in ("unchanged",):
            problems.append(f"{change['path']}: would be {change['action']} ({change['reason']})")
    summary = f"would create {created} and repair {repaired} nodes"
    return Verdict("sync", FAIL if problems else OK,
                   summary + (", widening none" if not problems else ""), problems)


def _widens(root: str, major: int | None, path: Path, by_path: dict[Path, dict[str, Any]],
            reason: str) -> list[str]:
    """Whether repairing ``path`` would let anyone open a capability they cannot open now."""
    cap = by_path.get(path)
    if cap is None:
        return [f"{path}: would be repaired ({reason}), but it is no capability's node"]
    want = read_capability(capability_file(root, cap["name"]))["DeviceFileMode"] & 0o777
    st = os.lstat(path)
    if not stat.S_ISCHR(st.st_mode):
        return []  # it opens nothing now; a node in its place is what the driver asks for
    if (major is None or st.st_rdev != os.makedev(major, cap["minor"])) and want & 0o077:
        return [f"{path}: would be re-pointed at {cap['name']} with mode {want:04o} ({reason})"]
    gained = want & ~stat.S_IMODE(st.st_mode)
    if gained:
        return [f"{path}: would gain mode bits {gained:04o} ({reason})"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capctl", required=True, help="the installed capctl command")
    parser.add_argument("--root", default="/", help="the driver root (default /)")
    parser.add_argument("--topology", default=None, help="a snapshot instead of NVML")
    parser.add_argument("--smi-output", default=None,
                        help="nvidia-smi -L's output, instead of running it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="capctl-hwcheck.") as tmp:
        config = os.path.join(tmp, "capctl.toml")  # absent: no grants, default settings
        capctl = Capctl(args.capctl, args.root, args.topology, config)
        verdicts: list[Verdict] = []
        smi: list[SmiGpu] | None = None
        try:
            text = smi_text(args.smi_output)
            smi = parse_smi(text) if text is not None else None
        except (CheckError, OSError) as err:
            verdicts.append(Verdict("nvidia-smi", FAIL, str(err)))
        checks: tuple[tuple[str, Callable[[], Verdict]], ...] = (
            ("doctor", lambda: check_doctor(capctl)),
            ("list", lambda: check_list(capctl, args.root)),
            ("topology", lambda: check_topology(capctl, args.root, smi)),
            ("resolve", lambda: check_resolve(capctl, args.root, smi)),
            ("sync", lambda: check_sync(capctl, args.root)),
        )
        for name, check in checks:
            try:
                verdicts.append(check())
            except (CheckError, OSError, KeyError, TypeError, ValueError) as err:
                verdicts.append(Verdict(name, FAIL, f"{type(err).__name__}: {err}"))
    for v in verdicts:
        print("\n".join(v.lines()))
    failed = [v.check for v in verdicts if v.level == FAIL]
    print("hardware-check: " + (f"FAILED: {', '.join(failed)}" if failed else
                                "capctl agrees with the driver"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
