"""Turn a resolved :class:`~capctl.request.resolve.Plan` into Edits: the container changes.

Pure: nothing here reads or writes the host.  An :class:`Edits` is what every delivery
consumes, so the hook, a CDI spec and the runtime wrapper can never disagree about what a
container gets (``docs/edits.md``):

- ``nodes``: one :class:`NodeEdit` per device node, in plan order: the GPU, control and UVM
  nodes first (read-write), then the capability nodes (read-only).  Each carries the path
  inside the container, the host path it stands for (under the driver root), the char major
  and minor, the file mode and the cgroup access.
- ``rules``: the cgroup allow rules, exactly one per node, with the node's access.
- :func:`bind_mounts`: the same nodes as bind mounts of the host nodes, for a delivery that
  cannot ``mknod`` (a container in a user namespace).

What a node's access is, and why capability nodes are read-only: opening a capability node
for reading is the driver's whole check (``docs/driver.md``); the GPU and control nodes take
ioctls on a read-write descriptor.
"""

from __future__ import annotations

from capctl._lite.record import Record
from capctl.driver import capnames
from capctl.edits.rules import DeviceRule, char
from capctl.errors import NodeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from capctl.request.resolve import Plan

#: Where GPU, control and UVM nodes go in a container, as on the host.
DEV_DIR = "/dev"
#: Where capability nodes go.
CAPS_DIR = "/" + capnames.CAPS_DEV_DIR
#: cgroup access of the two kinds of node.
DEVICE_ACCESS = "rw"
CAP_ACCESS = "r"


class NodeEdit(Record):
    """One device node a container gets: a char device ``major:minor`` at ``path``."""

    path: str  # inside the container: "/dev/nvidia3", "/dev/nvidia-caps/nvidia-cap21"
    host_path: str  # the host node it stands for, under the driver root
    major: int
    minor: int
    mode: int  # permission bits the node gets (the host node's, or the driver's mode)
    access: str  # cgroup access: "rw" for GPU/control/UVM nodes, "r" for capabilities

    @property
    def type(self) -> str:
        """OCI/CDI device type: always a character device."""
        return "c"

    @property
    def directory(self) -> str:
        return self.path.rsplit("/", 1)[0] or "/"

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    def rule(self) -> DeviceRule:
        return char(self.major, self.minor, self.access)


class Mount(Record):
    """A bind mount of a host node onto a container path (OCI ``mounts`` entry)."""

    source: str
    destination: str
    options: tuple[str, ...] = ("bind", "nosuid", "noexec")

    def to_oci(self) -> dict[str, object]:
        return {
            "source": self.source,
            "destination": self.destination,
            "type": "bind",
            "options": list(self.options),
        }


class Edits(Record):
    """Everything a container gets for one request; empty for an empty plan."""

    nodes: tuple[NodeEdit, ...] = ()

    @property
    def rules(self) -> tuple[DeviceRule, ...]:
        """The cgroup allow rules: one per node, with its access."""
        return tuple(n.rule() for n in self.nodes)

    def __bool__(self) -> bool:
        return bool(self.nodes)

    def in_dir(self, directory: str) -> tuple[NodeEdit, ...]:
        """The nodes whose parent directory is ``directory`` (``/dev``, ``/dev/nvidia-caps``)."""
        return tuple(n for n in self.nodes if n.directory == directory)


def host_path(root: str, path: str) -> str:
    """``path`` (absolute, as on a host) under the driver ``root``: ``/run/nvidia/driver/dev/...``."""
    return path if root in ("", "/") else root.rstrip("/") + path


def from_plan(plan: Plan, root: str = "/") -> Edits:
    """The edits of a plan whose nodes live under the driver ``root``.  Pure.

    Device nodes keep the plan's order, then capabilities in the plan's order.  A node outside
    its directory (a plan built wrong) is a :class:`NodeError`, never a node elsewhere.
    """
    nodes: list[NodeEdit] = []
    for n in plan.device_nodes:
        _check_path(n.path, DEV_DIR)
        nodes.append(
            NodeEdit(n.path, host_path(root, n.path), n.major, n.minor, n.mode, DEVICE_ACCESS)
        )
    if plan.caps:
        major = plan.caps_major
        if major is None:
            raise NodeError(CAPS_DIR, "capabilities without the caps major; refusing")
        for c in plan.caps:
            path = c.path
            _check_path(path, CAPS_DIR)
            nodes.append(NodeEdit(path, host_path(root, path), major, c.minor, c.mode, CAP_ACCESS))
    return Edits(tuple(nodes))


def bind_mounts(edits: Edits) -> tuple[Mount, ...]:
    """The nodes as bind mounts of their host nodes (for containers that cannot mknod)."""
    return tuple(Mount(n.host_path, n.path) for n in edits.nodes)


def _check_path(path: str, directory: str) -> None:
    head, _, name = path.rpartition("/")
    if head != directory or not name or name in (".", ".."):
        raise NodeError(path, f"not a node in {directory}; refusing")
