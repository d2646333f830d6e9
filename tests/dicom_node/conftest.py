"""Fixtures for the node's tests: a node on 127.0.0.1 with an ephemeral port, always stopped."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dicom_node.assembler import SeriesReady
from dicom_node.config import NodeConfig
from dicom_node.server import Node

QUIET_S = 0.3


class RunningNode:
    """A started node and the queue of its announcements."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.announcements: queue.Queue[SeriesReady] = node.assembler.subscribe_queue()

    @property
    def port(self) -> int:
        return self.node.address[1]

    def next_series(self, timeout_s: float = 10.0) -> SeriesReady:
        return self.announcements.get(timeout=timeout_s)


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., RunningNode]]:
    started: list[Node] = []

    def _start(writer: Any = None, **settings: Any) -> RunningNode:
        config = replace(NodeConfig(port=0, store_dir=tmp_path / "store", quiet_period_s=QUIET_S,
                                    acse_timeout_s=5, dimse_timeout_s=10, network_timeout_s=10,
                                    shutdown_grace_s=2), **settings)
        node = Node(config, writer=writer)
        running = RunningNode(node)  # subscribe before any instance can arrive
        node.start()
        started.append(node)
        return running

    yield _start
    for node in started:
        node.stop()
