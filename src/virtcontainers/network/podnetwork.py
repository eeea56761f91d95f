"""A pod's VM on the caller's network: one tap per interface, joined by tc redirects.

For each interface the caller put in the pod's namespace (the "tcfilter"
model of Kata Containers)::

    interface ──ingress──▶ u32 match-all, mirred egress redirect ──▶ tap ──▶ QEMU
    interface ◀── mirred egress redirect, u32 match-all ◀──ingress── tap ◀── QEMU

Every frame the interface receives leaves through the tap (to the VM), and
every frame the VM sends leaves through the interface.  The namespace's own
stack sees no traffic on it any more; the guest takes the interface's MAC,
addresses and routes (see :class:`~virtcontainers.network.discovery.Interface`).

What is made, and so what :meth:`PodNetwork.detach` and :func:`release`
remove: the taps, and one ingress qdisc on each caller's interface (deleting
it deletes its filter).  Nothing else of the caller's interfaces is changed.

A running pod takes one more interface over with
:meth:`PodNetwork.attach_interface` (the caller has put it in the namespace
first) and gives one back with :meth:`PodNetwork.detach_interface`; the
description follows, so :func:`release` still removes exactly what is there.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from virtcontainers.errors import ConfigError, ExistsError, NetworkError, NotFoundError
from virtcontainers.network import tap
from virtcontainers.network.discovery import (
    Interface,
    indexed_interfaces,
    interface_of,
    why_not_taken,
)
from virtcontainers.network.loopnat import remove_table_here
from virtcontainers.network.netns import NetnsId, open_netns, run_in_netns, run_in_the_same_netns
from virtcontainers.network.record import IngressRecord, NetworkRecord
from virtcontainers.network.rtnl import NetlinkError, Rtnl, is_missing

T = TypeVar("T")

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    """One interface of the pod and the tap that carries it into the VM.

    ``tap_fd`` is the tap's queue (``-netdev tap,fd=N``), close-on-exec; the
    caller owns it.  The VM's NIC takes ``interface.mac``.
    """

    interface: Interface
    tap_name: str
    tap_fd: int


@dataclass(frozen=True)
class _Attached:
    """An interface the pod has taken over: its tap and its ingress qdisc."""

    interface: Interface
    tap_name: str
    ingress: IngressRecord


@dataclass
class _Made:
    """What an attach has done so far, so that a failure can undo exactly that."""

    endpoints: list[Endpoint] = field(default_factory=list)
    taps: list[str] = field(default_factory=list)
    ingress: list[IngressRecord] = field(default_factory=list)

    def close_fds(self) -> None:
        for endpoint in self.endpoints:
            os.close(endpoint.tap_fd)


class PodNetwork:
    """Puts one pod's VM on the interfaces of its network namespace, and takes it off."""

    def __init__(self) -> None:
        self._record: NetworkRecord | None = None
        self._pod_id = ""
        self._attached: dict[str, _Attached] = {}
        self._log = _log

    @property
    def description(self) -> dict[str, object] | None:
        """What :meth:`attach` made, as JSON-able data for :func:`release`; None if nothing."""
        return self._record.to_json() if self._record is not None else None

    @property
    def interfaces(self) -> list[Interface]:
        """The interfaces taken over, as they were when attached: at boot, then hot-plugged."""
        return [attached.interface for attached in self._attached.values()]

    @property
    def taps(self) -> dict[str, str]:
        """The tap that carries each interface taken over, by the interface's name."""
        return {name: attached.tap_name for name, attached in self._attached.items()}

    def attach(self, netns_path: str, pod_id: str) -> list[Endpoint]:
        """Make a tap for each interface in the namespace and redirect it both ways.

        Returns one endpoint per interface, in :func:`discover` order (none if the
        namespace has only loopback).  On failure nothing made is left behind.
        Raises ConfigError("netns", ...) for a path that is not a pod's network
        namespace, NetworkError if the taps or filters cannot be made (an
        interface that already has an ingress qdisc, a tap name in use), and
        NetworkError if this object is already attached.
        """
        if self._record is not None:
            raise NetworkError(netns_path, f"already attached to {self._record.netns}", pod_id)
        self._log = _log.getChild(pod_id)
        fd = open_netns(netns_path)
        try:
            netns_id = NetnsId.of_fd(fd)
            made = run_in_netns(fd, lambda: _attach_here(netns_path, pod_id, self._log))
        finally:
            os.close(fd)
        self._record = NetworkRecord(netns_path, netns_id, tuple(made.taps), tuple(made.ingress))
        self._pod_id = pod_id
        self._attached = {
            e.interface.name: _Attached(e.interface, e.tap_name, ingress)
            for e, ingress in zip(made.endpoints, made.ingress, strict=True)
        }
        self._log.debug("attached in %s: %s", netns_path, self._record)
        return made.endpoints

    @classmethod
    def restore(cls, description: Mapping[str, object], pod_id: str) -> PodNetwork:
        """The network an attach made in another process (a pod daemon that died),
        from its :attr:`description`: the interfaces it took over are read again
        in the namespace (nothing of theirs changed since: the guest carries
        their addresses).  Raises ConfigError for a description we did not write,
        NetworkError if the namespace or one of its interfaces is not the one
        attached.
        """
        record = NetworkRecord.from_json(description)
        network = cls()
        network._log = _log.getChild(pod_id)
        network._pod_id = pod_id
        interfaces = network._in_namespace(record, lambda: _interfaces_here(record))
        network._record = record
        network._attached = {
            ingress.name: _Attached(interface, tap_name, ingress)
            for interface, tap_name, ingress in zip(
                interfaces, record.taps, record.ingress, strict=True
            )
        }
        return network

    def attach_interface(self, name: str) -> Endpoint:
        """Take one more interface of the namespace over: a tap, and the redirects.

        For a pod that is running: the caller has put ``name`` in the namespace
        since :meth:`attach`.  On failure nothing made is left behind.  Raises
        NotFoundError if the namespace has no interface ``name``, ExistsError
        if it is attached already, ConfigError if it cannot be carried (not
        Ethernet, loopback, a tap of ours), NetworkError if the taps or filters
        cannot be made, or before :meth:`attach`.
        """
        record = self._require_attached(name)
        if name in self._attached:
            raise ExistsError(
                "interface", name, f"in pod {self._pod_id!r}: it is attached to the VM already"
            )
        number = next(
            n for n in itertools.count() if tap.tap_name(self._pod_id, n) not in record.taps
        )
        taken = {attached.ingress.index: n for n, attached in self._attached.items()}
        log = self._log
        pod_id = self._pod_id
        made = self._in_namespace(
            record,
            lambda: _attach_one_here(record.netns, pod_id, name, number, taken, log),
        )
        [endpoint], [ingress] = made.endpoints, made.ingress
        self._record = replace(
            record, taps=(*record.taps, endpoint.tap_name), ingress=(*record.ingress, ingress)
        )
        self._attached[name] = _Attached(endpoint.interface, endpoint.tap_name, ingress)
        log.debug("attached %s through tap %s", name, endpoint.tap_name)
        return endpoint

    def detach_interface(self, name: str) -> None:
        """Give one interface back: remove its tap and its ingress qdisc.

        The interface itself is left exactly as the caller gave it.  Quiet when
        the namespace is gone.  Raises NotFoundError if ``name`` is not
        attached, NetworkError if something could not be removed (the
        interface then stays attached, and a later call tries again).
        """
        record = self._require_attached(name)
        attached = self._attached.get(name)
        if attached is None:
            raise NotFoundError(
                "interface",
                name,
                f"pod {self._pod_id!r} has no such interface attached "
                f"(attached: {', '.join(self._attached) or 'none'})",
            )
        _release(replace(record, taps=(attached.tap_name,), ingress=(attached.ingress,)), self._log)
        self._record = replace(
            record,
            taps=tuple(t for t in record.taps if t != attached.tap_name),
            ingress=tuple(i for i in record.ingress if i != attached.ingress),
        )
        del self._attached[name]
        self._log.debug("detached %s and removed tap %s", name, attached.tap_name)

    def _require_attached(self, name: str) -> NetworkRecord:
        if self._record is None:
            raise NetworkError("(none)", f"cannot change interface {name}: the pod is not attached")
        return self._record

    def _in_namespace(self, record: NetworkRecord, work: Callable[[], T]) -> T:
        """Run ``work`` in the pod's namespace, if the path still names that one."""
        fd = open_netns(record.netns)
        try:
            if not record.netns_id.same_namespace(NetnsId.of_fd(fd)):
                raise NetworkError(
                    record.netns,
                    "the path names another namespace than the one the pod was attached to",
                    self._pod_id,
                )
            return run_in_netns(fd, work)
        finally:
            os.close(fd)

    def detach(self) -> None:
        """Remove what :meth:`attach` made; the tap fds are the caller's to close.

        Idempotent, and quiet when the namespace is gone.  Raises NetworkError
        if something could not be removed (then a later call tries again).
        """
        if self._record is None:
            return
        _release(self._record, self._log)
        self._record = None
        self._attached = {}


def release(description: Mapping[str, object]) -> None:
    """Remove what an attach made, from its :attr:`PodNetwork.description`.

    For a process other than the one that attached (the pod daemon died).
    Nothing is done if the namespace is gone or its path now names another
    namespace.  Raises ConfigError for a description we did not write, and
    NetworkError if something could not be removed.
    """
    _release(NetworkRecord.from_json(description), _log)


def _release(record: NetworkRecord, log: logging.Logger) -> None:
    failures = run_in_the_same_netns(
        record.netns, record.netns_id, lambda: _remove_here(record, log), log, "nothing released"
    )
    if failures:
        raise NetworkError(record.netns, "cannot remove " + "; ".join(failures))


@contextlib.contextmanager
def _making(netns_path: str, pod_id: str, log: logging.Logger) -> Iterator[tuple[Rtnl, _Made]]:
    """Netlink in the pod's namespace; what was made is undone if the body fails,
    and netlink's failures become a NetworkError naming the namespace."""
    made = _Made()
    try:
        with Rtnl() as rtnl:
            try:
                yield rtnl, made
            except BaseException:
                _undo(rtnl, made, log)
                raise
    except (NetlinkError, OSError, ValueError) as exc:
        raise NetworkError(netns_path, _reason(exc), pod_id) from exc


def _attach_here(netns_path: str, pod_id: str, log: logging.Logger) -> _Made:
    with _making(netns_path, pod_id, log) as (rtnl, made):
        for n, (index, interface) in enumerate(indexed_interfaces(rtnl)):
            _connect(rtnl, made, index, interface, tap.tap_name(pod_id, n))
    return made


def _attach_one_here(
    netns_path: str,
    pod_id: str,
    name: str,
    number: int,
    taken: Mapping[int, str],
    log: logging.Logger,
) -> _Made:
    with _making(netns_path, pod_id, log) as (rtnl, made):
        link = rtnl.link_by_name(name)
        if link is None:
            where = f"put it in the pod's network namespace ({netns_path}) first"
            raise NotFoundError("interface", name, where)
        if link.index in taken:
            raise ExistsError(
                "interface",
                name,
                f"in pod {pod_id!r}: it is {taken[link.index]}, attached already and renamed since",
            )
        why_not = why_not_taken(link)
        if why_not is not None:
            raise ConfigError("interface", f"{name} cannot be carried into a VM: {why_not}")
        interface = interface_of(rtnl, link)
        _connect(rtnl, made, link.index, interface, tap.tap_name(pod_id, number))
    return made


def _interfaces_here(record: NetworkRecord) -> list[Interface]:
    """The interfaces ``record`` took over, each as :func:`discover` reads it now."""
    if len(record.taps) != len(record.ingress):
        raise ConfigError("network description", f"{record}: not one tap per interface")
    try:
        with Rtnl() as rtnl:
            links = [rtnl.link(ingress.index) for ingress in record.ingress]
            found = [
                interface_of(rtnl, link)
                for link, ingress in zip(links, record.ingress, strict=True)
                if link is not None and link.name == ingress.name
            ]
    except NetlinkError as exc:
        raise NetworkError(record.netns, f"cannot read its interfaces: {exc}") from exc
    if len(found) != len(record.ingress):
        names = ", ".join(i.name for i in record.ingress)
        raise NetworkError(record.netns, f"the interfaces attached ({names}) are not all there")
    return found


def _reason(exc: Exception) -> str:
    # str(OSError) leads with "[Errno N]": the message alone reads better.
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _undo(rtnl: Rtnl, made: _Made, log: logging.Logger) -> None:
    # The attach's own error is the one to report: failures here are only logged.
    for failure in _remove(rtnl, made.taps, made.ingress, log):
        log.warning("undoing a failed attach: cannot remove %s", failure)
    made.close_fds()


def _connect(rtnl: Rtnl, made: _Made, index: int, interface: Interface, name: str) -> None:
    try:
        _connect_steps(rtnl, made, index, interface, name)
    except NetlinkError as exc:
        message = f"cannot join {interface.name} and tap {name}: {os.strerror(exc.code)}"
        raise OSError(exc.code, message) from exc


def _connect_steps(rtnl: Rtnl, made: _Made, index: int, interface: Interface, name: str) -> None:
    tap_fd = _open_tap(name, interface)
    made.endpoints.append(Endpoint(interface, name, tap_fd))
    made.taps.append(name)
    tap_link = rtnl.link_by_name(name)
    if tap_link is None:
        raise OSError(errno.ENODEV, f"tap {name} vanished as it was made")
    rtnl.set_up(tap_link.index, interface.mtu)
    rtnl.add_ingress(tap_link.index)
    _add_ingress(rtnl, index, interface)
    made.ingress.append(IngressRecord(interface.name, index))
    rtnl.redirect(index, tap_link.index)
    rtnl.redirect(tap_link.index, index)


def _open_tap(name: str, interface: Interface) -> int:
    try:
        return tap.open_tap(name)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise OSError(
                exc.errno,
                f"tap {name} for {interface.name} exists already: is this pod attached "
                "twice, or left over from a pod that was not released?",
            ) from exc
        raise OSError(exc.errno, f"cannot make tap {name}: {exc.strerror}") from exc


def _add_ingress(rtnl: Rtnl, index: int, interface: Interface) -> None:
    try:
        rtnl.add_ingress(index)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise
        raise OSError(
            errno.EEXIST,
            f"interface {interface.name} already has an ingress qdisc (someone else's tc "
            "setup, or a pod that was not released): it cannot be redirected to a VM",
        ) from exc


def _remove_here(record: NetworkRecord, log: logging.Logger) -> list[str]:
    # A daemon that died left its loopback redirect (loopnat.py) too.
    failures = remove_table_here(record.netns)
    try:
        with Rtnl() as rtnl:
            return failures + _remove(rtnl, record.taps, record.ingress, log)
    except NetlinkError as exc:
        raise NetworkError(record.netns, f"cannot remove what a pod made: {exc}") from exc


def _remove(
    rtnl: Rtnl, taps: Sequence[str], ingress: Sequence[IngressRecord], log: logging.Logger
) -> list[str]:
    """Remove ingress qdiscs, then taps; go on past failures and return them."""
    failures = []
    for record in ingress:
        try:
            _remove_ingress(rtnl, record, log)
        except NetlinkError as exc:
            failures.append(f"the ingress qdisc of {record.name}: {exc}")
    for name in taps:
        try:
            _remove_tap(rtnl, name, log)
        except NetlinkError as exc:
            failures.append(f"tap {name}: {exc}")
    return failures


def _remove_ingress(rtnl: Rtnl, record: IngressRecord, log: logging.Logger) -> None:
    link = rtnl.link(record.index)
    if link is None or link.name != record.name:
        # The interface we changed is gone, and its qdisc with it.
        log.debug("interface %s (index %d) is gone", record.name, record.index)
        return
    rtnl.delete_ingress(record.index)


def _remove_tap(rtnl: Rtnl, name: str, log: logging.Logger) -> None:
    link = rtnl.link_by_name(name)
    if link is None:
        return  # its last fd was closed: a tap that is not persistent goes with it
    if link.kind != "tun":
        log.warning("not removing %s: it is a %s, not our tap", name, link.kind or "device")
        return
    try:
        rtnl.delete_link(link.index)
    except NetlinkError as exc:
        if not is_missing(exc):
            raise
