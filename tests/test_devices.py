"""The NVIDIA_VISIBLE_DEVICES grammar: every form, every rejection (pure, table-driven)."""

from __future__ import annotations

import pytest

from capctl.devices import (
    MAX_TOKEN,
    GpuByIndex,
    GpuByUuid,
    MigByIndex,
    MigByInstance,
    MigByUuid,
    Request,
    parse_request,
)
from capctl.errors import DeviceError

U = "6f1c2a52-7d3e-4a0b-9c55-2c6f0e7b1a00"
U2 = "0b9a3c1e-1111-4222-8333-944455556666"

ACCEPT = [
    ("unset", None, []),
    ("empty", "", []),
    ("blank", "  \t ", []),
    ("none", "none", []),
    ("void", "void", []),
    ("none padded", " none ", []),
    ("mig uuid", f"MIG-{U}", [MigByUuid(f"MIG-{U}")]),
    ("mig uuid upper hex", f"MIG-{U.upper()}", [MigByUuid(f"MIG-{U}")]),
    ("mig triple", f"MIG-GPU-{U}/7/0", [MigByInstance(f"GPU-{U}", 7, 0)]),
    ("mig triple two digits", f"MIG-GPU-{U}/13/7", [MigByInstance(f"GPU-{U}", 13, 7)]),
    ("mig index", "0:1", [MigByIndex(0, 1)]),
    ("mig index multi digit", "12:10", [MigByIndex(12, 10)]),
    ("gpu uuid", f"GPU-{U}", [GpuByUuid(f"GPU-{U}")]),
    ("gpu index", "3", [GpuByIndex(3)]),
    ("gpu index zero", "0", [GpuByIndex(0)]),
    ("list", f"0, 1:2 ,GPU-{U2}", [GpuByIndex(0), MigByIndex(1, 2), GpuByUuid(f"GPU-{U2}")]),
    ("tabs", "\t0\t,\t1\t", [GpuByIndex(0), GpuByIndex(1)]),
    ("duplicates dropped", "1,0,1, 0", [GpuByIndex(1), GpuByIndex(0)]),
    ("duplicate uuid case", f"MIG-{U},MIG-{U.upper()}", [MigByUuid(f"MIG-{U}")]),
]


@pytest.mark.parametrize(("value", "want"), [(v, w) for _, v, w in ACCEPT],
                         ids=[i for i, _, _ in ACCEPT])
def test_accept(value: str | None, want: list[object]) -> None:
    req = parse_request(value)
    assert not req.all
    assert [r.device for r in req.refs] == want
    assert req.empty == (want == [])


def test_all() -> None:
    assert parse_request("all") == Request(all=True)
    assert parse_request(" all ").all
    assert not parse_request("all").empty


def test_token_kept_for_messages() -> None:
    req = parse_request(" 0:1 , 2")
    assert [r.token for r in req.refs] == ["0:1", "2"]


LONG = "1" * (MAX_TOKEN + 1)

REJECT = [
    # (id, value, the token the error must quote)
    ("empty item", "0,,1", "0,,1"),
    ("trailing comma", "0,", "0,"),
    ("leading comma", ",0", ",0"),
    ("only comma", ",", ","),
    ("absolute path", "/dev/nvidia0", "/dev/nvidia0"),
    ("dotdot", "..", ".."),
    ("dotdot path", "../../etc/passwd", "../../etc/passwd"),
    ("relative path", "dev/nvidia0", "dev/nvidia0"),
    ("node name", "nvidia0", "nvidia0"),
    ("triple with dotdot", f"MIG-GPU-{U}/../0", f"MIG-GPU-{U}/../0"),
    ("triple extra part", f"MIG-GPU-{U}/1/0/0", f"MIG-GPU-{U}/1/0/0"),
    ("overlong", LONG, LONG[:MAX_TOKEN]),
    ("short uuid", "GPU-6f1c2a52-7d3e-4a0b-9c55", "GPU-6f1c2a52-7d3e-4a0b-9c55"),
    ("uuid bad hex", f"GPU-{U[:-1]}g", f"GPU-{U[:-1]}g"),
    ("uuid no dashes", "GPU-" + U.replace("-", ""), "GPU-" + U.replace("-", "")),
    ("uuid lower prefix", f"gpu-{U}", f"gpu-{U}"),
    ("mig uuid bad", "MIG-1234", "MIG-1234"),
    ("old mig uuid with gpu prefix only", f"MIG-GPU-{U}", f"MIG-GPU-{U}"),
    ("negative index", "-1", "-1"),
    ("leading zero", "01", "01"),
    ("plus sign", "+1", "+1"),
    ("index too long", "1234", "1234"),
    ("mig index missing part", "0:", "0:"),
    ("mig index three parts", "0:1:2", "0:1:2"),
    ("space inside", "0 1", "0 1"),
    ("newline inside", "0\n1", "0\n1"),
    ("all in a list", "all,0", "all"),
    ("none in a list", "0,none", "none"),
    ("ALL upper", "ALL", "ALL"),
    ("glob", "*", "*"),
    ("unicode digit", "\u0661", "\u0661"),
    ("nul", "0\x00", "0\x00"),
]


@pytest.mark.parametrize(("value", "token"), [(v, t) for _, v, t in REJECT],
                         ids=[i for i, _, _ in REJECT])
def test_reject(value: str, token: str) -> None:
    with pytest.raises(DeviceError) as info:
        parse_request(value)
    assert info.value.device.startswith(token)
    assert repr(info.value.device) in str(info.value)


def test_path_like_message() -> None:
    with pytest.raises(DeviceError, match="path"):
        parse_request("/dev/nvidia0")


def test_overlong_value() -> None:
    with pytest.raises(DeviceError, match="longer than"):
        parse_request(",".join(["0"] * 5000))
