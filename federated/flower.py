"""The same algorithms as a Flower app: a ``ServerApp`` and a ``ClientApp`` on flwr's Message/Grid API.

- The ``ServerApp`` main drives the algorithm's server program
  (:data:`federated.driver.ALGORITHMS`) with a transport that turns each round of
  :class:`~federated.protocol.Task` s into ``Message`` s of type ``train.fl`` (tensors in an
  ``ArrayRecord``, the action and its scalars in a ``ConfigRecord``, the run's
  :class:`~federated.protocol.FLConfig` in another) and the replies back into
  :class:`~federated.protocol.Reply` s. FuseFL's K stages + CCVR are K + 1 such rounds.
- The ``ClientApp`` loads its own partition (``node_config["partition-id"]``) from the
  run's config, runs the client action, and keeps the client's state (FuseFL's own
  blocks) in ``context.state`` between rounds.

:func:`run_flower` runs the pair on Flower's simulation engine (Ray); a deployment runs the
very same ``server_app``/``client_app`` with ``flwr run`` (pass the run's FLConfig fields
in the app's run config). Bytes are counted by the shared :func:`federated.driver.drive`,
i.e. exactly as in-process. This module and :mod:`federated.runner` both build on
:mod:`federated.driver`; the runner loads this module only for ``engine="flower"``, and this
module never imports the runner.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from torch import Tensor

from headscope.common import HeadscopeError, log
from headscope.common.threads import num_threads

from .driver import ALGORITHMS, RunResult, check_config, client_env, drive, finish, server_env
from .protocol import FLConfig, Reply, Task, run_client_action

STATE_KEY = "federated_state"


_SCALAR = "@0d"  # flwr's Array stores 0-d arrays as shape [1]; such keys get this suffix


def to_record(arrays: dict[str, Tensor]) -> ArrayRecord:
    """Tensors → ``ArrayRecord`` (numpy copies, dtype and shape kept, 0-d included)."""
    out = {}
    for k, v in arrays.items():
        key = k + _SCALAR if v.dim() == 0 else k
        out[key] = Array.from_numpy_ndarray(np.ascontiguousarray(v.detach().cpu().numpy()))
    return ArrayRecord(out)


def from_record(rec: ArrayRecord) -> dict[str, Tensor]:
    """``ArrayRecord`` → tensors (inverse of :func:`to_record`)."""
    out = {}
    for k, a in rec.items():
        t = torch.from_numpy(np.array(a.numpy(), copy=True))
        if k.endswith(_SCALAR):
            k, t = k[: -len(_SCALAR)], t.reshape(())
        out[k] = t
    return out


# ----------------------------------------------------------------------------- client
client_app = ClientApp()


def _partition_id(context: Context) -> int:
    if "partition-id" not in context.node_config:
        raise HeadscopeError(
            "this ClientApp needs node_config['partition-id'] "
            "(set by the simulation or `flower-supernode --node-config`)"
        )
    return int(context.node_config["partition-id"])


@client_app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    """Tell the server which data partition this node holds."""
    return Message(RecordDict({"meta": ConfigRecord({"partition-id": _partition_id(context)})}), reply_to=msg)


@client_app.train("fl")
def train(msg: Message, context: Context) -> Message:
    """Run one client action of the run's algorithm on this node's partition (on one torch thread)."""
    cfg = FLConfig.from_flat(dict(msg.content["cfg"]))
    task_cfg = dict(msg.content["task"])
    action = str(task_cfg.pop("action"))
    with num_threads(1):
        env = client_env(cfg, _partition_id(context))
        if STATE_KEY in context.state:
            env.state.update(from_record(context.state[STATE_KEY]))
        reply = run_client_action(Task(action, from_record(msg.content["arrays"]), task_cfg), env)
    context.state[STATE_KEY] = to_record(env.state)
    content = RecordDict(
        {"arrays": to_record(reply.arrays), "metrics": MetricRecord({k: float(v) for k, v in reply.metrics.items()})}
    )
    return Message(content, reply_to=msg)


# ----------------------------------------------------------------------------- server
def _wait_for_nodes(grid: Grid, n: int, timeout: float = 120.0) -> list[int]:
    t0 = time.time()
    while True:
        ids = sorted(grid.get_node_ids())
        if len(ids) >= n:
            return ids
        if time.time() - t0 > timeout:
            raise HeadscopeError(f"only {len(ids)} of {n} Flower nodes connected within {timeout:.0f} s")
        time.sleep(0.2)


def _check(replies: list[Message], what: str) -> None:
    for r in replies:
        if r.has_error():
            raise HeadscopeError(f"a Flower client failed during {what}: {r.error.reason}")


def serve(grid: Grid, cfg: FLConfig) -> RunResult:
    """The ServerApp's work: map nodes to partitions, drive the algorithm over the Grid, evaluate.

    Runs on one torch thread and restores the caller's setting afterwards.
    """
    with num_threads(1):
        return _serve(grid, cfg)


def _serve(grid: Grid, cfg: FLConfig) -> RunResult:
    t0 = time.perf_counter()
    nodes = _wait_for_nodes(grid, cfg.clients)
    hello_replies = list(
        grid.send_and_receive([Message(RecordDict(), dst_node_id=n, message_type="query.hello") for n in nodes])
    )
    _check(hello_replies, "hello")
    node_of = {int(r.content["meta"]["partition-id"]): r.metadata.src_node_id for r in hello_replies}
    if sorted(node_of) != list(range(cfg.clients)):
        raise HeadscopeError(f"Flower nodes hold partitions {sorted(node_of)}, expected 0..{cfg.clients - 1}")
    cid_of = {v: k for k, v in node_of.items()}
    flat = ConfigRecord(cfg.to_flat())

    def transport(tasks: dict[int, Task]) -> dict[int, Reply]:
        msgs = []
        for cid, task in tasks.items():
            content = RecordDict(
                {
                    "arrays": to_record(task.arrays),
                    "task": ConfigRecord({"action": task.action, **task.config}),
                    "cfg": flat,
                }
            )
            msgs.append(Message(content, dst_node_id=node_of[cid], message_type="train.fl"))
        replies = list(grid.send_and_receive(msgs))
        _check(replies, "a training round")
        return {
            cid_of[r.metadata.src_node_id]: Reply(from_record(r.content["arrays"]), dict(r.content["metrics"]))
            for r in replies
        }

    env = server_env(cfg)
    program = ALGORITHMS[cfg.algorithm](cfg, env)
    result, up, down, rounds = drive(program, transport, label=f"flower {cfg.algorithm}")
    return finish(cfg, env, result, up, down, rounds, time.perf_counter() - t0, "flower")


def make_server_app(cfg: FLConfig, sink: dict) -> ServerApp:
    """A ``ServerApp`` that runs ``cfg``'s algorithm and puts its :class:`RunResult` in ``sink["result"]``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        sink["result"] = serve(grid, cfg)

    return app


# For a deployment (`flwr run`): the FLConfig fields come from the app's run config
# (e.g. `--run-config "algorithm='fusefl' clients=5 alpha=0.3"`); the result is logged.
server_app = ServerApp()


@server_app.main()
def _deployed(grid: Grid, context: Context) -> None:
    cfg = FLConfig.from_flat(dict(context.run_config))
    check_config(cfg)
    r = serve(grid, cfg)
    log(
        f"[flower {cfg.algorithm}] accuracy {r.accuracy:.4f}, up {r.bytes_up} B, down {r.bytes_down} B, "
        f"{r.seconds:.1f} s"
    )


def run_flower(cfg: FLConfig, num_cpus: int = 1, verbose: bool = False) -> RunResult:
    """Run ``cfg`` as a Flower app on the simulation engine (Ray) with ``cfg.clients`` virtual nodes.

    Ray gets ``num_cpus`` CPUs and each ClientApp one, so at most ``num_cpus`` clients train
    at once.
    """
    check_config(cfg)
    from flwr.simulation import run_simulation

    sink: dict = {}
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": int(num_cpus),
            "num_gpus": 0,
            "log_to_driver": verbose,
            "object_store_memory": 78_643_200,
        },
    }
    log(f"[flower {cfg.algorithm}] simulation with {cfg.clients} nodes on {num_cpus} CPU(s)")
    run_simulation(
        server_app=make_server_app(cfg, sink),
        client_app=client_app,
        num_supernodes=cfg.clients,
        backend_config=backend_config,
        verbose_logging=verbose,
    )
    if "result" not in sink:
        raise HeadscopeError(
            "the Flower simulation ended without a result; rerun with verbose=True to see the Flower log"
        )
    return sink["result"]
