"""The agent's operations, one module per family, and ``HANDLERS``, the table
that dispatches each op of the protocol to one of them.

Standard library only; may import the agent's modules below it (the core for
typing only), never the host's.  The table is keyed by the protocol's op
names, the ones the host's client sends; a unit test holds it to the host's
table of ops (``virtcontainers.agent.contract``).
"""

from __future__ import annotations

from ..wire import protocol
from . import blocks, clone, containers, guest, network, ports, processes, reattach, resources

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from ..core import OpHandler

Op = protocol.Op

HANDLERS: dict[str, OpHandler] = {
    Op.PING: guest.ping,
    Op.GUEST_DETAILS: guest.guest_details,
    Op.CREATE_CONTAINER: containers.create_container,
    Op.START_CONTAINER: containers.start_container,
    Op.EXEC_PROCESS: processes.exec_process,
    Op.EXEC_GUEST: processes.exec_guest,
    Op.SIGNAL_PROCESS: processes.signal_process,
    Op.WAIT_PROCESS: processes.wait_process,
    Op.RESIZE_TERMINAL: processes.resize_terminal,
    Op.CLOSE_OUTPUT: processes.close_output,
    Op.LIST_PROCESSES: containers.list_processes,
    Op.PAUSE_CONTAINER: containers.pause_container,
    Op.RESUME_CONTAINER: containers.resume_container,
    Op.CONTAINER_STATE: containers.container_state,
    Op.REMOVE_CONTAINER: containers.remove_container,
    Op.CONFIGURE_NETWORK: network.configure_network,
    Op.UPDATE_CONTAINER: resources.update_container,
    Op.CONTAINER_STATS: resources.container_stats,
    Op.MOUNT_BLOCK: blocks.mount_block,
    Op.UNMOUNT_BLOCK: blocks.unmount_block,
    Op.INIT_CLONE: clone.init_clone,
    Op.CONNECT_PORT: ports.connect_port,
    Op.SHUTDOWN: guest.shutdown,
    Op.PROCESS_TABLE: reattach.process_table,
    Op.RESUME_OUTPUT: reattach.resume_output,
}
