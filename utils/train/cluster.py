"""The cluster of a multi-worker run: TF_CONFIG checked, the strategy made first, who writes where.

`train.py --strategy multi_worker_mirrored` runs the same command on every machine, each with its
own TF_CONFIG (the whole cluster, and which task this process is). MultiWorkerMirroredStrategy must
be created before any TensorFlow op runs, and it blocks until every worker has joined -- the task that
leads the cluster with no deadline, inside C++ holding the GIL (TF 2.20: neither a Python timer nor
SIGTERM gets it out). So the workers first meet over plain TCP on their own ports, with a timeout, and
a worker that cannot reach the others stops with one line instead of hanging. Only the chief
writes the run folder (checkpoints, TensorBoard, run.json, train.log); the other workers must still
save (saving is a collective step), so they write into a temporary folder removed at the end.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from utils.common.errors import UserError, one_line

TF_CONFIG_VAR = "TF_CONFIG"
JOBS = ("chief", "worker")  # the task types MultiWorkerMirroredStrategy trains with
EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}')
PEER_POLL_S = 0.5  # between connection attempts while waiting for the other workers


class ClusterError(UserError):
    """TF_CONFIG that is missing, malformed or inconsistent, or a cluster that cannot be reached."""


@dataclass(frozen=True)
class ClusterTask:
    """This process's place in the cluster described by TF_CONFIG."""

    cluster: dict[str, list[str]]
    task_type: str
    task_index: int

    @property
    def address(self) -> str:
        return self.cluster[self.task_type][self.task_index]

    @property
    def num_workers(self) -> int:
        return sum(len(self.cluster.get(job, [])) for job in JOBS)

    @property
    def is_chief(self) -> bool:
        """The task that writes the run folder: `chief` when there is one, else worker 0."""
        if "chief" in self.cluster:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.task_index} ({self.address})"

    def peers(self) -> list[str]:
        return [a for job in JOBS for a in self.cluster.get(job, []) if a != self.address]


def _bad(problem: str) -> ClusterError:
    return ClusterError(f"{TF_CONFIG_VAR}: {problem}; set it on each machine like {EXAMPLE} (see README, Train)")


def _check_address(job: str, address: object) -> None:
    host, sep, port = str(address).rpartition(":")
    if not isinstance(address, str) or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad(f"cluster.{job} address {address!r} is not HOST:PORT")


def parse_tf_config(text: str | None) -> ClusterTask:
    """The TF_CONFIG JSON checked: chief/worker jobs of HOST:PORT addresses, no address twice, and this
    task one of them. ClusterError (one line) otherwise."""
    if not text or not text.strip():
        raise _bad("not set; --strategy multi_worker_mirrored reads the cluster from it")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(f"not valid JSON ({exc})") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("cluster"), Mapping) \
            or not isinstance(data.get("task"), Mapping):
        raise _bad("expected an object with 'cluster' and 'task'")
    cluster: dict[str, list[str]] = {}
    for job, addresses in data["cluster"].items():
        if job not in JOBS:
            raise _bad(f"cluster job {job!r} is not supported (multi_worker_mirrored trains with "
                       f"{' and '.join(JOBS)} tasks only)")
        if isinstance(addresses, str) or not isinstance(addresses, list) or not addresses:
            raise _bad(f"cluster.{job} must be a non-empty list of HOST:PORT")
        for address in addresses:
            _check_address(job, address)
        cluster[job] = list(addresses)
    if "worker" not in cluster and "chief" not in cluster:
        raise _bad("the cluster lists no worker")
    if len(cluster.get("chief", [])) > 1:
        raise _bad(f"a cluster has one chief, this one lists {len(cluster['chief'])}")
    everyone = [a for job in JOBS for a in cluster.get(job, [])]
    twice = sorted({a for a in everyone if everyone.count(a) > 1})
    if twice:
        raise _bad(f"address {twice[0]} is listed twice; every task needs its own HOST:PORT")
    task_type, index = data["task"].get("type"), data["task"].get("index", 0)
    if not isinstance(task_type, str) or task_type not in cluster:
        raise _bad(f"task.type {task_type!r} is not a job of the cluster ({', '.join(cluster)})")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        raise _bad(f"task.index {index!r} is not one of the {len(cluster[task_type])} {task_type} task(s) "
                   f"(0..{len(cluster[task_type]) - 1})")
    return ClusterTask(cluster, task_type, index)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def wait_for_peers(task: ClusterTask, timeout_s: float, message: str) -> None:
    """Listen on this task's port and connect to every other task's, until all answered or `timeout_s`
    passed (ClusterError(message)). A peer answers through this same listener or, once it has moved on,
    through TensorFlow's server on the same port. The listener is closed before TensorFlow binds it."""
    port = _host_port(task.address)[1]
    try:
        listener = socket.create_server(("", port), backlog=64)
    except OSError as exc:
        raise ClusterError(f"{TF_CONFIG_VAR}: {task.name} cannot listen on port {port} ({exc.strerror or exc}); "
                           f"is another process using it?") from exc
    waiting = set(task.peers())
    deadline = time.monotonic() + timeout_s
    try:
        while waiting:
            for peer in sorted(waiting):
                with contextlib.suppress(OSError):
                    socket.create_connection(_host_port(peer), timeout=PEER_POLL_S).close()
                    waiting.discard(peer)
            if waiting and time.monotonic() > deadline:
                raise ClusterError(message)
            if waiting:
                time.sleep(PEER_POLL_S)
    finally:
        listener.close()


def make_multi_worker_strategy(task: ClusterTask, timeout_s: float):
    """MultiWorkerMirroredStrategy for the TF_CONFIG cluster, waiting at most `timeout_s` for the other
    workers. Call it before any other TensorFlow work (collective ops are configured at startup)."""
    import tensorflow as tf
    from tensorflow.python.eager import context

    unreachable = (f"{TF_CONFIG_VAR}: {task.name} could not reach the other workers "
                   f"({', '.join(task.peers()) or 'none'}) within {timeout_s:g} s; start train.py with each "
                   f"task's TF_CONFIG on every machine, check the addresses and firewall, or raise --cluster-timeout")
    wait_for_peers(task, timeout_s, unreachable)
    try:
        try:  # the coordination service MWMS would configure, with a deadline for every task to register
            from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
        except ImportError:  # another TF layout: MWMS configures the service itself, with no deadline
            coordination_config_pb2 = None
        if coordination_config_pb2 is not None:
            leader = "chief" if "chief" in task.cluster else "worker"
            context.context().configure_coordination_service(
                service_type="standalone", service_leader=f"/job:{leader}/replica:0/task:0",
                cluster_register_timeout_in_ms=int(timeout_s * 1000),
                coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(task.cluster[job]))
                                  for job in JOBS if job in task.cluster])
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as exc:
        raise ClusterError(unreachable) from exc
    except (tf.errors.OpError, RuntimeError, ValueError) as exc:
        first = one_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise ClusterError(f"{TF_CONFIG_VAR}: cannot start {task.name} ({first}); is the port free and the "
                           f"address this machine's?") from exc


def is_chief(strategy) -> bool:
    """Whether this process writes the run folder (always, without a cluster)."""
    return bool(getattr(strategy.extended, "should_checkpoint", True))


@contextlib.contextmanager
def write_dir(run_dir: Path, strategy, prefix: str = "train-") -> Iterator[Path]:
    """The run folder on the chief; a temporary folder, removed afterwards, on the other workers."""
    if is_chief(strategy):
        yield run_dir
        return
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
