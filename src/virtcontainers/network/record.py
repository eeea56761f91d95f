"""What a pod's network attach made, in a form another process can undo.

The pod daemon stores it as JSON with the pod's state; if the daemon dies,
whoever cleans the pod up passes it to :func:`~virtcontainers.network.release`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from virtcontainers.errors import ConfigError
from virtcontainers.network.netns import NetnsId

VERSION = 1


@dataclass(frozen=True)
class IngressRecord:
    """A caller's interface we gave an ingress qdisc: its name and index then."""

    name: str
    index: int


@dataclass(frozen=True)
class NetworkRecord:
    netns: str
    netns_id: NetnsId
    taps: tuple[str, ...] = ()
    ingress: tuple[IngressRecord, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "version": VERSION,
            "netns": self.netns,
            "netns_id": [
                self.netns_id.dev,
                self.netns_id.ino,
                *([] if self.netns_id.cookie is None else [self.netns_id.cookie]),
            ],
            "taps": list(self.taps),
            "ingress": [{"name": i.name, "index": i.index} for i in self.ingress],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> NetworkRecord:
        """Raises ConfigError("network description", ...) if ``data`` is not one we wrote."""
        try:
            if data["version"] != VERSION:
                raise ValueError(f"version {data['version']!r}, expected {VERSION}")
            netns_id = _list(data["netns_id"])
            if len(netns_id) not in (2, 3):
                raise ValueError(f"netns_id {netns_id!r} is not [dev, inode(, cookie)]")
            return cls(
                netns=_str(data["netns"]),
                netns_id=NetnsId(*(_int(part) for part in netns_id)),
                taps=tuple(_str(name) for name in _list(data["taps"])),
                ingress=tuple(_ingress(item) for item in _list(data["ingress"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError("network description", f"{exc!s} in {data!r}") from exc


def _ingress(item: object) -> IngressRecord:
    if not isinstance(item, Mapping):
        raise TypeError(f"ingress entry {item!r} is not an object")
    return IngressRecord(_str(item["name"]), _int(item["index"]))


def _list(value: object) -> list[object]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"{value!r} is not a list")
    return list(value)


def _str(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{value!r} is not a non-empty string")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a non-negative integer")
    return value
