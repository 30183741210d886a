"""``InProcessGrid``: a Flower ``Grid`` that hands each message to a ``ClientApp`` in this
process, one client after the other.

Why: Flower's simulation runtime needs Ray (one actor process per client plus Ray's own
daemons); on a 2-core machine that adds ~10-20 s of start-up and memory for a federation that
trains in seconds. This grid keeps everything else Flower's own: the ``ServerApp`` logic, the
strategy objects (sampling, aggregation, DP wrappers) and the ``ClientApp`` handlers see the
same ``Message``/``Context`` objects as under Ray or the deployment engine. A ClientApp that
raises becomes an error reply, exactly as Flower's runtimes report it; each client receives
its own copy of the message, as over a network.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Iterable
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from medsec.federated.arrays import payload_bytes

FIRST_NODE_ID = 1001


class InProcessGrid(Grid):
    """Grid over ``len(node_configs)`` virtual SuperNodes, each with a persistent ``Context``.

    ``node_configs[i]`` becomes node ``FIRST_NODE_ID + i``'s ``node_config`` (e.g.
    ``{"partition-id": i, "num-partitions": n}``); ``run_config`` is every node's run config
    (as ``flwr run --run-config`` would set it).
    """

    def __init__(self, client_app: ClientApp, node_configs: list[dict], run_id: int = 1,
                 run_config: dict | None = None) -> None:
        self.client_app = client_app
        self._run = Run.create_empty(run_id)
        self.contexts = {
            FIRST_NODE_ID + i: Context(run_id=run_id, node_id=FIRST_NODE_ID + i,
                                       node_config=dict(cfg), state=RecordDict(),
                                       run_config=dict(run_config or {}))
            for i, cfg in enumerate(node_configs)
        }
        self._replies: dict[str, Message] = {}
        # node id -> [payload bytes received by the node, payload bytes it sent back]
        self.traffic: dict[int, list[int]] = {node: [0, 0] for node in self.contexts}
        # Messages take their sender from the process' task identity (set by Flower's
        # runtimes for a ServerApp process): this process is the server's task.
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run  # type: ignore[return-value]

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            self._replies[message.metadata.message_id] = self._deliver(message)
            ids.append(message.metadata.message_id)
        return ids

    def _deliver(self, message: Message) -> Message:
        node = message.metadata.dst_node_id
        if node not in self.contexts:
            return Message(Error(code=ErrorCode.UNKNOWN, reason=f"unknown node {node}"),
                           reply_to=message)
        try:
            # A copy, as after a real transport: strategies send one content object to many
            # nodes, and client mods (e.g. SecAgg+) modify what they receive.
            reply = self.client_app(copy.deepcopy(message), self.contexts[node])
        except Exception as exc:  # noqa: BLE001 - reported like Flower's runtimes do
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=last),
                            reply_to=message)
        reply.metadata.__dict__["_message_id"] = str(uuid4())
        self.traffic[node][0] += payload_bytes(message.content)
        if reply.has_content():
            self.traffic[node][1] += payload_bytes(reply.content)
        return reply

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))
