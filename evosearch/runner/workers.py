"""What Ray workers run: probe one candidate, or train it on one task. No search state here.

Graphs travel as plain graph-file data and come back as plain JSON records. Datasets are put in the
object store once by the driver or ``rerank`` as numpy arrays (:func:`load_packed_datasets`,
:func:`put_datasets`: shared memory, no copy per task) and rebuilt here.

:func:`submit_training` and :func:`training_result` are the one way the driver and ``rerank`` start a
training and read its outcome: a worker process that dies (killed, out of host memory) or a device
fault (:data:`~evosearch.tasks.train.DEVICE_FAULTS`) is retried up to ``resources.retries`` times in
a new process; what still fails becomes a record's ``exit_reason``, never an exception.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
import torch

from evosearch.config import to_dict
from evosearch.layers.graph_io import graph_from_dict
from evosearch.outcomes import ExitReason
from evosearch.probes.screen import ProbeConfig, probe_layer
from evosearch.tasks.datasets import ImageData, load_dataset
from evosearch.tasks.text import TextData
from evosearch.tasks.train import DEVICE_FAULTS, TaskConfig, train_candidate

if TYPE_CHECKING:
    from evosearch.runner.run_config import ResourcesConfig


# The datasets a worker receives, by the name a packed one records.
_DATASET_KINDS: dict[str, type[ImageData | TextData]] = {"images": ImageData, "text": TextData}


def pack_data(data: ImageData | TextData) -> dict[str, Any]:
    """A dataset as numpy arrays and plain values, for ``ray.put``: its fields, and its kind."""
    kind = next(k for k, cls in _DATASET_KINDS.items() if isinstance(data, cls))
    packed: dict[str, Any] = {"kind": kind}
    for f in dataclasses.fields(data):
        value = getattr(data, f.name)
        packed[f.name] = value.numpy() if isinstance(value, torch.Tensor) else value
    return packed


def load_packed_datasets(tasks: Sequence[TaskConfig]) -> list[dict[str, Any]]:
    """Each task's dataset, packed; a dataset two tasks share loads once and is the same object, so
    :func:`put_datasets` stores it once. Missing or malformed data fails here, before any work."""
    packed: dict[str, dict[str, Any]] = {}
    for task in tasks:
        key = repr(to_dict(task.dataset))
        if key not in packed:
            packed[key] = pack_data(load_dataset(task.dataset))
    return [packed[repr(to_dict(task.dataset))] for task in tasks]


def put_datasets(packed: Sequence[dict[str, Any]]) -> list[ray.ObjectRef]:
    """Each distinct packed dataset into the object store once, shared by every training on it; one
    reference per entry of ``packed``."""
    refs: dict[int, ray.ObjectRef] = {}
    for data in packed:
        if id(data) not in refs:
            refs[id(data)] = ray.put(data)
    return [refs[id(data)] for data in packed]


def unpack_data(packed: dict[str, Any]) -> ImageData | TextData:
    """The inverse of :func:`pack_data`; tensors share the (read-only) object-store memory."""
    fields = {k: _tensor(v) if isinstance(v, np.ndarray) else v for k, v in packed.items() if k != "kind"}
    return _DATASET_KINDS[packed["kind"]](**fields)


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


def probe_candidate(graph_data: dict[str, Any], config: ProbeConfig) -> dict[str, Any]:
    """Probe one candidate; torch runs on this thread alone while it does (see ``probe_layer``), so
    ``resources.cpus_per_probe`` is what Ray reserves, not what the probe uses."""
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
_train_on_cpu = ray.remote(train_on_task)
# A GPU evaluation gets a new worker process each time, as Ray's own @ray.remote(num_gpus=...) does
# (max_calls=1, ray-project/ray#29624), which passing num_gpus through .options() does not: a reused
# process keeps the GPU it first initialized CUDA on even when Ray assigns it another, keeps torch's
# cached GPU memory, and after a CUDA error fails every task it runs.
_train_on_gpu = ray.remote(max_calls=1)(train_on_task)


def submit_training(
    graph_data: dict[str, Any], task: TaskConfig, data_ref: ray.ObjectRef, resources: ResourcesConfig
) -> ray.ObjectRef:
    """Train a candidate on one task on a worker; read the outcome with :func:`training_result`.
    ``task.train.inject_device_fault_at_step`` makes every attempt fault, to check the retries."""
    remote = _train_on_gpu if resources.gpus_per_evaluation > 0 else _train_on_cpu
    options = remote.options(
        num_cpus=resources.cpus_per_evaluation,
        num_gpus=resources.gpus_per_evaluation,
        max_retries=resources.retries,  # worker deaths and ...
        retry_exceptions=list(DEVICE_FAULTS),  # ... device faults; a bad candidate is not retried
    )
    return options.remote(graph_data, task, data_ref, max(1, int(resources.cpus_per_evaluation)))


def training_result(ref: ray.ObjectRef, timed_out: bool = False) -> dict[str, Any]:
    """The training record of ``ref``, or one with the ``exit_reason`` of how its task failed."""
    try:
        return ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return {"exit_reason": str(ExitReason.TIMEOUT if timed_out else ExitReason.CANCELLED)}
    except ray.exceptions.OutOfMemoryError:  # Ray's memory monitor killed the worker
        return {"exit_reason": str(ExitReason.OUT_OF_MEMORY)}
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError):
        return {"exit_reason": str(ExitReason.WORKER_CRASHED)}
    except ray.exceptions.RayError as e:
        cause = getattr(e, "cause", None) or e  # a RayTaskError carries the worker's exception
        if isinstance(cause, torch.OutOfMemoryError):
            kind = ExitReason.OUT_OF_MEMORY
        elif isinstance(cause, torch.AcceleratorError):
            kind = ExitReason.DEVICE_ERROR
        else:
            kind = ExitReason.ERROR
        return {"exit_reason": f"{kind}: {type(cause).__name__}: {' '.join(str(cause).split())[:300]}"}
