"""virtc pod net: interfaces hot-plugged into a running pod (docs/network.md)."""

from __future__ import annotations

import json

import click
from rich.table import Table

from virtcontainers import api
from virtcontainers.cli.virtc.common import VcGroup, query, stdout


@click.group("net", cls=VcGroup)
def pod_net() -> None:
    """Interfaces of a running pod's network namespace, carried into its VM."""


@pod_net.command("add")
@click.argument("pod_id")
@click.argument("ifname")
def pod_net_add(pod_id: str, ifname: str) -> None:
    """Hot-plug interface IFNAME of the pod's namespace into its VM.

    Put IFNAME in the namespace first, with its addresses and routes: the
    guest takes them over.
    """
    added = api.add_interface(pod_id, ifname)
    stdout.print(f"{added.name} {added.mac} {' '.join(added.addresses)}", highlight=False)


@pod_net.command("rm")
@click.argument("pod_id")
@click.argument("ifname")
def pod_net_rm(pod_id: str, ifname: str) -> None:
    """Unplug interface IFNAME from the pod's VM; it stays in the namespace."""
    api.remove_interface(pod_id, ifname)


@pod_net.command("ls")
@query("pod_id")
def pod_net_ls(pod_id: str, as_json: bool) -> None:
    """The interfaces the pod's VM carries."""
    interfaces = api.list_interfaces(pod_id)
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in interfaces], indent=1))
        return
    table = Table("INTERFACE", "MAC", "MTU", "ADDRESSES", "ADDED", box=None)
    for i in interfaces:
        added = "hot-plug" if i.hotplugged else "boot"
        table.add_row(i.name, i.mac, str(i.mtu), " ".join(i.addresses) or "-", added)
    stdout.print(table)
