"""What Ray workers run: probe one candidate, or train it on one task. No search state here.

Graphs travel as plain graph-file data and come back as plain JSON records. Datasets are put in the
object store once by the driver as numpy arrays (shared memory, no copy per task) and rebuilt here.

:func:`submit_training` and :func:`training_result` are the one way the driver and ``rerank`` start a
training and read its outcome: a worker process that dies (killed, out of host memory) or a device
fault (:data:`~evosearch.tasks.train.DEVICE_FAULTS`) is retried up to ``resources.retries`` times in
a new process; what still fails becomes a record's ``exit_reason``, never an exception.
"""

from __future__ import annotations

import os
import socket
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
import torch

from evosearch.layers.graph_io import graph_from_dict
from evosearch.probes.screen import ProbeConfig, probe_layer
from evosearch.tasks.datasets import ImageData
from evosearch.tasks.train import DEVICE_FAULTS, TaskConfig, train_candidate

if TYPE_CHECKING:
    from evosearch.runner.run_config import ResourcesConfig


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
_train_on_cpu = ray.remote(train_on_task)
# A GPU evaluation gets a new worker process each time, as Ray's own @ray.remote(num_gpus=...) does
# (max_calls=1, ray-project/ray#29624), which passing num_gpus through .options() does not: a reused
# process keeps the GPU it first initialized CUDA on even when Ray assigns it another, keeps torch's
# cached GPU memory, and after a CUDA error fails every task it runs.
_train_on_gpu = ray.remote(max_calls=1)(train_on_task)


def training_options(resources: ResourcesConfig) -> dict[str, Any]:
    """The Ray options of one training task under ``resources``."""
    return {
        "num_cpus": resources.cpus_per_evaluation,
        "num_gpus": resources.gpus_per_evaluation,
        "max_retries": resources.retries,  # worker deaths and ...
        "retry_exceptions": list(DEVICE_FAULTS),  # ... device faults; a bad candidate is not retried
    }


def submit_training(
    graph_data: dict[str, Any], task: TaskConfig, data_ref: ray.ObjectRef, resources: ResourcesConfig
) -> ray.ObjectRef:
    """Train a candidate on one task on a worker; read the outcome with :func:`training_result`."""
    remote = _train_on_gpu if resources.gpus_per_evaluation > 0 else _train_on_cpu
    threads = max(1, int(resources.cpus_per_evaluation))
    return remote.options(**training_options(resources)).remote(graph_data, task, data_ref, threads)


def training_result(ref: ray.ObjectRef, timed_out: bool = False) -> dict[str, Any]:
    """The training record of ``ref``, or one with the ``exit_reason`` of how its task failed."""
    try:
        return ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return {"exit_reason": "timeout" if timed_out else "cancelled"}
    except ray.exceptions.OutOfMemoryError:  # Ray's memory monitor killed the worker
        return {"exit_reason": "out_of_memory"}
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError):
        return {"exit_reason": "worker_crashed"}
    except ray.exceptions.RayError as e:
        cause = getattr(e, "cause", None) or e  # a RayTaskError carries the worker's exception
        if isinstance(cause, torch.OutOfMemoryError):
            kind = "out_of_memory"
        elif isinstance(cause, torch.AcceleratorError):
            kind = "device_error"
        else:
            kind = "error"
        return {"exit_reason": f"{kind}: {type(cause).__name__}: {' '.join(str(cause).split())[:300]}"}
