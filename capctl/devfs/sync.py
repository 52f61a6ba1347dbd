"""``capctl sync``: make the host's ``/dev/nvidia-caps`` match the driver, like
``nvidia-modprobe -f`` for every capability at once.

Plan (pure: :func:`plan`) and apply (:func:`apply`) are separate so ``--dry-run`` and the
doctor share the plan.  Applying holds an exclusive lock on ``/dev/nvidia-caps`` so concurrent
runs (udev firing for every GPU at once) serialise instead of racing.
"""

from __future__ import annotations

import os
import stat

from capctl._lite import record
from capctl.devfs import nodes, safefs
from capctl.devfs.nodes import Action, Changes, NodeSpec
from capctl.driver import capnames, procfs
from capctl.driver.procfs import DriverState, write_modify
from capctl.host import Host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from capctl.driver.minorsfile import Capability
    from capctl.policy.grants import Ownership

CHAR_DIR = "dev/char"
_MIG = capnames.Source.MIG


class Skip(record.Record):
    name: str
    reason: str


class SyncPlan:
    """The nodes to make (each with its capability) and the capabilities left alone."""

    def __init__(self, specs: list[tuple[Capability, NodeSpec]] | None = None,
                 skipped: list[Skip] | None = None):
        self.specs: list[tuple[Capability, NodeSpec]] = [] if specs is None else specs
        self.skipped: list[Skip] = [] if skipped is None else skipped


def _none() -> Changes:
    return Changes("", [], [])


class SyncReport:
    """What a sync did (or, dry, would do)."""

    def __init__(self, skipped: list[Skip] | None = None, dry_run: bool = False):
        self.changes = _none()
        self.link_changes = _none()
        #: Stray nodes (:func:`capnames.stray_reason`) removed (or, dry, to be removed).
        self.removed = _none()
        #: ``/dev/char`` links of the GPU, control and UVM nodes that exist
        #: (:func:`device_links`).
        self.device_links = _none()
        self.skipped: list[Skip] = [] if skipped is None else skipped
        self.dry_run = dry_run

    def count(self, action: Action) -> int:
        """How many nodes got ``action`` (links not counted)."""
        return self.changes.tally(action)


def plan(
    state: DriverState, *, everything: bool, grants: Mapping[str, Ownership] | None = None
) -> SyncPlan:
    """Which nodes ``sync`` must make, with which mode and owner.  Pure.

    A node is made for every capability with a proc file, in the mode the file says.  With
    ``everything`` (``sync --all``), also for the ``mig-minors`` capabilities without one, in
    the driver's documented default mode (``docs/driver.md``, "Default modes"): never for an
    nvlink or sys capability whose file is absent, since nothing then says who may open it
    (``fabric-mgmt`` and ``fabric-imex-mgmt`` are root-only, 0400).

    A capability whose proc file says ``DeviceFileModify: 0`` belongs to someone else (an
    admin told the driver's helper to keep off): it is skipped unless capctl holds a grant for
    it, in which case capctl is that someone.
    """
    grants = grants or {}
    out = SyncPlan()
    append = out.specs.append
    existing = state.existing
    major = state.caps_major
    for cap in state.table:
        name, minor = cap.name, cap.minor
        cf = existing.get(name)
        if cf is None:
            if not everything or cap.source is not _MIG:
                continue
            mode = capnames.CONFIG_MODE if name == "config" else capnames.DEFAULT_MODE  # default_mode
        else:
            mode = cf.mode
        grant = grants.get(name) if grants else None
        if grant is not None:
            spec = NodeSpec(
                f"nvidia-cap{minor}", major, minor, grant.mode, grant.uid, grant.gid, grant.acl
            )
        elif cf is not None and not cf.modify:
            out.skipped.append(Skip(name, "DeviceFileModify: 0 (managed by someone else)"))
            continue
        else:
            spec = NodeSpec(f"nvidia-cap{minor}", major, minor, mode)  # capnames.node_name
        append((cap, spec))
    return out


def apply(host: Host, state: DriverState, p: SyncPlan, *, dry_run: bool = False) -> SyncReport:
    """Create or repair the planned nodes and their ``/dev/char`` links under the host root."""
    report = SyncReport(skipped=list(p.skipped), dry_run=dry_run)
    root_fd = safefs.open_root(str(host.root))
    try:
        if dry_run and not os.path.isdir(host.path(capnames.CAPS_DEV_DIR)):
            report.changes = Changes.missing(
                host.display(capnames.CAPS_DEV_DIR), [spec.name for _cap, spec in p.specs]
            )
            return report
        dir_fd = safefs.open_dir(
            root_fd, capnames.CAPS_DEV_DIR, create=not dry_run, mode=0o755, display=str(host.root)
        )
        try:
            with nodes.locked(dir_fd, host.display(capnames.CAPS_DEV_DIR)):
                _fix_dir_mode(dir_fd, dry_run)
                specs = [s for _c, s in p.specs]
                display = host.display(capnames.CAPS_DEV_DIR)
                report.changes = nodes.ensure_nodes(
                    dir_fd, specs, display_dir=display, dry_run=dry_run
                )
                report.removed = nodes.remove_nodes(
                    dir_fd,
                    find_strays(dir_fd, state.caps_major, {s.name for s in specs}),
                    display_dir=display,
                    dry_run=dry_run,
                )
                report.link_changes = _ensure_char_links(host, root_fd, state, p, dry_run)
                report.device_links = _ensure_device_links(host, root_fd, state, dry_run)
        finally:
            os.close(dir_fd)
    finally:
        os.close(root_fd)
    return report


def find_strays(dir_fd: int, caps_major: int, planned: set[str]) -> list[tuple[str, str]]:
    """``(name, reason)`` of every stray node in ``/dev/nvidia-caps`` (held as ``dir_fd``).

    A stray is judged by its name and number alone (:func:`capnames.stray_reason`), whether or
    not its capability exists now: an alias of a capability that appears later would open it
    past its grants then.  ``planned`` names are left to :func:`nodes.ensure_nodes`, which
    repairs them in place.
    """
    out = []
    for name, major, minor in nodes.char_nodes(dir_fd, planned):
        reason = capnames.stray_reason(name, major, minor, caps_major)
        if reason is not None:
            out.append((name, reason))
    return out


def _fix_dir_mode(dir_fd: int, dry_run: bool) -> None:
    # docs/driver.md, "Nodes": the node directory has mode 0755, root-owned.
    st = os.fstat(dir_fd)
    if not dry_run and (st.st_mode & 0o7777 != 0o755):
        os.fchmod(dir_fd, 0o755)


def _ensure_char_links(
    host: Host, root_fd: int, state: DriverState, p: SyncPlan, dry_run: bool
) -> Changes:
    """``/dev/char/<major>:<minor>`` -> ``../nvidia-caps/nvidia-capN``.

    systemd's ``DeviceAllow=`` resolves nodes through these links, and nvidia-modprobe makes
    them too; udev would, but it does not know about nodes it did not create.  Also for the
    capabilities left alone (``DeviceFileModify`` not 1): nvidia-modprobe makes the link
    whatever that value says (``docs/driver.md``, "/dev/char links").
    """
    # bytes: what readlink(2) returns, compared undecoded (nodes.ensure_links); the node's
    # name is capnames.node_name(minor).
    minors = [spec.minor for _c, spec in p.specs]
    for skip in p.skipped:
        cap = state.table.get(skip.name)
        if cap is not None:
            minors.append(cap.minor)
    prefix = b"%d:" % state.caps_major
    names = [prefix + b"%d" % minor for minor in minors]
    if dry_run and not os.path.isdir(host.path(CHAR_DIR)):
        return Changes.missing(host.display(CHAR_DIR), names)
    targets = [b"../nvidia-caps/nvidia-cap%d" % minor for minor in minors]
    char_fd = safefs.open_dir(
        root_fd, CHAR_DIR, create=not dry_run, mode=0o755, display=str(host.root)
    )
    try:
        return nodes.ensure_links(
            char_fd, names, targets, display_dir=host.display(CHAR_DIR), dry_run=dry_run
        )
    finally:
        os.close(char_fd)


#: The driver's other nodes (made by nvidia-modprobe or the installer, not by capctl).
DEVICE_NODE_PREFIXES = ("nvidia",)


def device_links(host: Host, root_fd: int, state: DriverState) -> list[tuple[bytes, bytes]]:
    """``(M:m, ../<name>)`` for each char node ``/dev/nvidia*`` of the GPU (frontend) or UVM
    major that exists under the host root.

    udev makes ``/dev/char`` links only for devices the kernel announces, and the nvidia
    driver announces none of these nodes (nvidia-modprobe ``mknod``s them), so nothing else
    makes their links; runc needs them to pass spec devices to systemd (docs/systemd.md).
    """
    majors = {m for m in (state.majors.frontend, state.majors.uvm) if m is not None}
    dev_fd = safefs.open_dir(root_fd, "dev", display=str(host.root))
    try:
        out = []
        for name in sorted(os.listdir(dev_fd)):
            if not name.startswith(DEVICE_NODE_PREFIXES):
                continue
            st = safefs.lstat_at(dev_fd, name)
            if st is None or not stat.S_ISCHR(st.st_mode) or os.major(st.st_rdev) not in majors:
                continue
            rdev = st.st_rdev
            out.append((b"%d:%d" % (os.major(rdev), os.minor(rdev)), b"../" + os.fsencode(name)))
        return out
    finally:
        os.close(dev_fd)


def _ensure_device_links(host: Host, root_fd: int, state: DriverState, dry_run: bool) -> Changes:
    if not os.path.isdir(host.path("dev")):
        return _none()
    pairs = device_links(host, root_fd, state)
    if not pairs:
        return _none()
    names = [n for n, _t in pairs]
    if dry_run and not os.path.isdir(host.path(CHAR_DIR)):
        return Changes.missing(host.display(CHAR_DIR), names)
    char_fd = safefs.open_dir(
        root_fd, CHAR_DIR, create=not dry_run, mode=0o755, display=str(host.root)
    )
    try:
        return nodes.ensure_links(
            char_fd, names, [t for _n, t in pairs], display_dir=host.display(CHAR_DIR),
            dry_run=dry_run,
        )  # fmt: skip
    finally:
        os.close(char_fd)


def sync_host(host: Host, *, everything: bool = False, dry_run: bool = False) -> SyncReport:
    """``capctl sync`` with grants: re-pin the proc files of granted capabilities that exist
    (a driver reload resets ``DeviceFileModify`` to 1), then create or repair every node.

    Holds the config's lock shared (:class:`capctl.policy.lock.ConfigLock`), so that a
    ``grant`` or ``revoke`` in progress finishes first; a dry run, or a config whose
    directory does not exist, takes none."""
    from capctl.policy.lock import ConfigLock, no_lock

    config = host.config
    take = not dry_run and os.path.isdir(os.path.dirname(config) or ".")
    with ConfigLock(config, shared=True) if take else no_lock():
        own = grant_ownership(config)
        state = procfs.load(host)
        if not dry_run:
            existing = dict(state.existing)
            for name in own:
                cf = existing.get(name)
                cap = state.table.get(name)
                if cf is not None and cap is not None and cf.modify:
                    existing[name] = write_modify(host, cap, cf, False)
            state = record.replace(state, existing=existing)
        return apply(host, state, plan(state, everything=everything, grants=own),
                     dry_run=dry_run)


def grant_ownership(config: str) -> dict[str, Ownership]:
    """The node ownership the config's grants demand; none without a config (the grants'
    modules, ``re``, ``enum`` and ``dataclasses`` among them, load only with one)."""
    from capctl.policy import settings

    table = settings.read_table(config)
    if table is None:
        return {}
    from capctl.policy.grants import parse_document

    return parse_document(table, config).policy.ownership()
