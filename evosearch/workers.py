"""What Ray workers run: probe one candidate, or train it on one task. No search state here.

Graphs travel as plain graph-file data and come back as plain JSON records. Datasets are put in the
object store once by the driver as numpy arrays (shared memory, no copy per task) and rebuilt here.
"""

from __future__ import annotations

import os
import socket
import warnings
from typing import Any

import numpy as np
import ray
import torch

from evosearch.graph_io import graph_from_dict
from evosearch.probes import ProbeConfig, probe_layer
from evosearch.tasks.datasets import ImageData
from evosearch.tasks.train import TaskConfig, train_candidate


def pack_data(data: ImageData) -> dict[str, Any]:
    """ImageData as numpy arrays and plain values, for ``ray.put``."""
    return {
        "name": data.name,
        "train_images": data.train_images.numpy(),
        "train_labels": data.train_labels.numpy(),
        "val_images": data.val_images.numpy(),
        "val_labels": data.val_labels.numpy(),
        "class_names": tuple(data.class_names),
        "mean": tuple(data.mean),
        "std": tuple(data.std),
    }


def unpack_data(packed: dict[str, Any]) -> ImageData:
    """The inverse of :func:`pack_data`; tensors share the (read-only) object-store memory."""
    tensors = {k: _tensor(v) for k, v in packed.items() if isinstance(v, np.ndarray)}
    return ImageData(
        name=packed["name"],
        class_names=packed["class_names"],
        mean=packed["mean"],
        std=packed["std"],
        **tensors,
    )


def _tensor(array: np.ndarray) -> torch.Tensor:
    # Object-store arrays are read-only; the training loop only reads them (it copies to the device
    # or indexes batches), so torch's warning about non-writable memory does not apply.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def worker_info() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "node_id": ray.get_runtime_context().get_node_id(),
    }


def probe_candidate(graph_data: dict[str, Any], config: ProbeConfig, threads: int) -> dict[str, Any]:
    # Torch threads = the CPUs Ray granted: more would contend with the tasks beside this one.
    torch.set_num_threads(max(1, threads))
    result = probe_layer(graph_from_dict(graph_data), config).to_json()
    result["worker"] = worker_info()
    return result


def train_on_task(
    graph_data: dict[str, Any], task: TaskConfig, packed: dict[str, Any], threads: int
) -> dict[str, Any]:
    torch.set_num_threads(max(1, threads))
    result = train_candidate(graph_from_dict(graph_data), task, unpack_data(packed)).to_json()
    result["worker"] = worker_info()
    return result


probe_remote = ray.remote(probe_candidate)
train_remote = ray.remote(train_on_task)
