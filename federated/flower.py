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

The app folder ``federated/app`` (its ``pyproject.toml`` holds ``[tool.flwr.app]``: the
components are this module's ``server_app``/``client_app``, and the run config lists every
config field) is what ``flwr run federated/app`` starts, on the local simulation federation
by default. :func:`flwr_run` (and ``engine="flower"`` of the runner and CLI) does exactly
that in a private ``FLWR_HOME``: it carries the whole config (a ``SemiConfig`` keeps its
rounds, labelled clients, epochs, ...) as ``--run-config`` and reads the ServerApp's result
file. :func:`make_server_app` builds a ServerApp bound to one config for callers that host
Flower themselves. Bytes are counted by the shared :func:`federated.driver.drive`, i.e.
exactly as in-process. This module and :mod:`federated.runner` both build on
:mod:`federated.driver`; the runner loads this module only for ``engine="flower"``, and this
module never imports the runner.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from torch import Tensor

from headscope.common import HeadscopeError, log
from headscope.common.threads import num_threads

from .driver import ALGORITHMS, RunResult, check_config, client_env, drive, finish, server_env
from .protocol import ConfigValue, FLConfig, Reply, Task, run_client_action
from .semi import SemiConfig, check_semi

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


# ----------------------------------------------------------------------------- deployment (`flwr run`)
APP_DIR = Path(__file__).resolve().parent / "app"
"""The Flower app folder: ``pyproject.toml`` with ``[tool.flwr.app]`` (components = this module's apps)."""

SEMI_ALGORITHMS = ("twinsight", "fixmatch", "freematch", "fedavg_labelled", "fedavg_all_labels")
AUTO = "auto"
RESULT_KEY = "result-path"


def config_class(algorithm: str) -> type[FLConfig]:
    """The config class an algorithm runs with: ``SemiConfig`` for the label-deficient ones, else ``FLConfig``."""
    return SemiConfig if algorithm in SEMI_ALGORITHMS else FLConfig


def to_run_config(cfg: FLConfig, result_path: str | Path = "") -> dict[str, ConfigValue]:
    """``cfg`` as the app's run config: every field of its class, plus where to write the result.

    Fields of ``SemiConfig`` that a one-shot ``FLConfig`` lacks are left out (the app's
    pyproject supplies them and a one-shot run never reads them).
    """
    return {RESULT_KEY: str(result_path), **cfg.to_flat()}


def from_run_config(run_config: dict, n_nodes: int | None = None) -> FLConfig:
    """The app's run config (``[tool.flwr.app.config]`` + ``--run-config``) → the algorithm's config.

    ``"auto"`` means the default of the algorithm's own config class (e.g. Twin-sight's 1 local
    epoch, batch 64, lr 0.01, against the one-shot 30 / 16 / 0.05); ``clients = "auto"`` means
    one client per connected node (``n_nodes``). Unknown keys are an error, so a misspelt
    field is never silently replaced by a default.
    """
    d = {k: v for k, v in run_config.items() if k != RESULT_KEY}
    algorithm = str(d.get("algorithm", FLConfig.algorithm))
    cls = config_class(algorithm)
    known = {f.name for f in dataclasses.fields(SemiConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise HeadscopeError(f"unknown run-config keys {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if d.get("clients") == AUTO and n_nodes is not None:
        d["clients"] = n_nodes
    own = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in d.items() if k in own and not (v == AUTO and k != "model")}
    return cls.from_flat(kw)


server_app = ServerApp()


@server_app.main()
def _deployed(grid: Grid, context: Context) -> None:
    """``flwr run``'s entry: build the config from the run config, run it, log and optionally save the result."""
    run_config = dict(context.run_config)
    n_nodes = None
    if run_config.get("clients") == AUTO:
        time.sleep(1.0)  # nodes of a simulation register at once; a deployment should name `clients`
        n_nodes = len(grid.get_node_ids())
    cfg = from_run_config(run_config, n_nodes)
    check_config(cfg)
    if isinstance(cfg, SemiConfig):
        check_semi(cfg)
    r = serve(grid, cfg)
    log(
        f"[flower {cfg.algorithm}] accuracy {r.accuracy:.4f}, up {r.bytes_up} B, down {r.bytes_down} B, "
        f"{r.rounds} rounds, {r.seconds:.1f} s"
    )
    path = str(run_config.get(RESULT_KEY, ""))
    if path:
        Path(path).write_text(json.dumps(r.to_dict(), indent=2))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes_with(marker: str) -> list[int]:
    """PIDs of this user's processes whose command line contains ``marker`` (a private temp path)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if marker in (d / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def _stop(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 10
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.2)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def flwr_run(
    cfg: FLConfig,
    num_cpus: int = 1,
    app_dir: str | Path = APP_DIR,
    timeout: float = 900.0,
    verbose: bool = False,
) -> RunResult:
    """Run ``cfg`` with ``flwr run`` on a local simulation federation of ``cfg.clients`` nodes.

    This is exactly what a user types (``flwr run federated/app --stream -c <toml>``), in a
    private ``FLWR_HOME`` with free ports, so the managed local SuperLink that ``flwr run``
    starts is this call's own; it is stopped when the run ends. The ServerApp writes its
    :class:`RunResult` to a JSON file named in the run config, which is read back here.
    Each ClientApp gets one CPU; Ray gets ``num_cpus``.
    """
    check_config(cfg)
    flwr = str(Path(sys.executable).with_name("flwr"))
    if not Path(flwr).exists():
        flwr = shutil.which("flwr") or "flwr"
    home = Path(tempfile.mkdtemp(prefix="headscope-flwr-"))
    try:
        result_path = home / "result.json"
        overrides = home / "run_config.toml"
        overrides.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in to_run_config(cfg, result_path).items()))
        env = dict(os.environ)
        env.update(
            FLWR_HOME=str(home),
            FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(_free_port()),
            FLWR_LOCAL_CONTROL_API_PORT=str(_free_port()),
            FLWR_DISABLE_UPDATE_CHECK="1",
            # flwr starts flower-superlink / flwr-simulation by name: put this interpreter's scripts first
            PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        )
        cmd = [
            flwr,
            "run",
            str(app_dir),
            "--stream",
            "--run-config",
            str(overrides),
            "--federation-config",
            f"num-supernodes={cfg.clients} client-resources-num-cpus=1 init-args-num-cpus={int(num_cpus)}",
        ]
        log(f"[flower {cfg.algorithm}] flwr run with {cfg.clients} nodes on {num_cpus} CPU(s)")
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise HeadscopeError(f"flwr run did not finish within {timeout:.0f} s; logs in {home}") from e
        finally:
            _stop(_processes_with(str(home)))
        if verbose or proc.returncode != 0 or not result_path.exists():
            log(proc.stdout[-4000:] + proc.stderr[-4000:])
        if proc.returncode != 0 or not result_path.exists():
            raise HeadscopeError(
                f"flwr run ended (exit {proc.returncode}) without a result; the log above and "
                f"{home / 'local-superlink' / 'superlink.log'} say why"
            )
        d = json.loads(result_path.read_text())
        return RunResult(**d)
    finally:
        if result_path.exists():
            shutil.rmtree(home, ignore_errors=True)


def run_flower(cfg: FLConfig, num_cpus: int = 1, verbose: bool = False) -> RunResult:
    """``engine="flower"``: the run as a Flower app, started with ``flwr run`` (:func:`flwr_run`)."""
    return flwr_run(cfg, num_cpus=num_cpus, verbose=verbose)
