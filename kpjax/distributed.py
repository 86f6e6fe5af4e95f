"""Data-parallel training over devices and hosts with JAX's own sharding engine.

A one-axis device ``Mesh`` named ``data``: each global batch is split over it
(``NamedSharding(mesh, P("data"))``), parameters and optimizer state are
replicated (``P()``), and jit's sharding propagation turns the gradient sums
into all-reduces, so the jitted step keeps its meaning. With several processes
(hosts, joined by ``jax.distributed``) each process holds its own share of the
training set on its devices and fills its slice of every global batch. One
device in one process keeps the plain single-device path, untouched.
"""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kpjax.dataset import Dataset
from kpjax.errors import KpjaxError
from kpjax.train_step import take_batch

DATA_AXIS = "data"
FORCE_CPU_DEVICES = "--xla_force_host_platform_device_count"


def init_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """Join a multi-process run (one process per host, or several on one); call before any other JAX work.

    ``coordinator="auto"`` lets JAX read the cluster's own environment (SLURM,
    Open MPI, Kubernetes, Cloud TPU). On CPU the cross-process all-reduces go
    through gloo; GPUs use NCCL whatever this setting says.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator == "auto":
        jax.distributed.initialize()
        return
    if coordinator is None or num_processes is None or process_id is None:
        raise KpjaxError("--coordinator HOST:PORT, --num-processes P and --process-id I go together "
                         "(or use --coordinator auto under SLURM, Open MPI or Kubernetes)")
    if not 0 <= process_id < num_processes:
        raise KpjaxError(f"--process-id {process_id}: expected 0 to {num_processes - 1} for --num-processes {num_processes}")
    jax.distributed.initialize(coordinator, num_processes, process_id)


def sync_processes(name: str) -> None:
    """A barrier across processes; free with one process."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def mesh_devices(devices: int | str) -> list[list[jax.Device]]:
    """The devices each process contributes: its first ``devices`` (or all) local ones, process by process."""
    by_process = [[d for d in jax.devices() if d.process_index == p] for p in range(jax.process_count())]
    if devices == "all":
        return by_process
    have = len(by_process[jax.process_index()])
    if devices > have:
        hint = f"; on CPU, export XLA_FLAGS={FORCE_CPU_DEVICES}={devices}" if jax.default_backend() == "cpu" else ""
        raise KpjaxError(f"--devices {devices}: this process has only {have} {jax.default_backend()} device(s){hint}")
    return [row[:devices] for row in by_process]


class DataParallel:
    """Where a run's data, state and batches live: on one device, or over a ``data`` mesh.

    The global batch is laid out process-major: process ``p`` fills rows
    ``[p * b, (p + 1) * b)`` of it with ``b = batch / process_count``, split over
    its own devices in mesh order, so its local batch becomes its part of the
    global array without a copy.
    """

    def __init__(self, devices: int | str = 1):
        rows = mesh_devices(devices)
        self.num_devices = sum(map(len, rows))
        self.process_count, self.process_index = jax.process_count(), jax.process_index()
        self.mesh = Mesh(np.array(sum(rows, [])), (DATA_AXIS,)) if self.num_devices > 1 else None
        self.local_mesh = Mesh(np.array(rows[self.process_index]), (DATA_AXIS,))

    @property
    def is_primary(self) -> bool:
        """The process that writes run files; Orbax picks its own primary the same way."""
        return self.process_index == 0

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.num_devices:
            multiple = math.ceil(batch_size / self.num_devices) * self.num_devices
            raise KpjaxError(f"--batch {batch_size}: does not split evenly over {self.num_devices} devices; "
                             f"use a multiple of {self.num_devices}, e.g. --batch {multiple}")

    def process_batch_size(self, batch_size: int) -> int:
        return batch_size // self.process_count

    def process_share(self, dataset: Dataset) -> Dataset:
        """Every ``process_count``-th face from ``process_index`` on, equal shares so every process runs as many steps."""
        if self.process_count == 1:
            return dataset
        share = len(dataset) // self.process_count
        return dataset.subset(np.arange(self.process_index, len(dataset), self.process_count)[:share])

    def put_data(self, data: dict) -> dict:
        """This process's training data, whole on each of its devices so any batch is a local gather."""
        if self.mesh is None:
            return jax.device_put(data)
        return jax.device_put(data, NamedSharding(self.local_mesh, P()))

    def put_state(self, state: dict) -> dict:
        """Parameters and optimizer state, replicated on every device of the mesh."""
        if self.mesh is None:
            return state
        replicated = NamedSharding(self.mesh, P())
        return jax.tree.map(lambda x: _global_from_identical(np.asarray(x), replicated), state)

    def put_key(self, key: jax.Array) -> jax.Array:
        """A PRNG key every process derives alike, as one replicated array that jit accepts beside global ones."""
        if self.mesh is None:
            return key
        return jax.random.wrap_key_data(_global_from_identical(np.asarray(jax.random.key_data(key)),
                                                                NamedSharding(self.mesh, P())))

    def put_batch(self, batch: dict) -> dict:
        """A host batch (this process's rows) as one array split over the data axis."""
        if self.mesh is None:
            return jax.device_put(batch)
        return jax.make_array_from_process_local_data(NamedSharding(self.mesh, P(DATA_AXIS)), batch)

    def take_batch(self, data: dict, order: jax.Array, step: int, batch_size: int) -> dict:
        """Batch ``step`` of the epoch's ``order``: each device gathers only its own rows."""
        if self.mesh is None:
            return take_batch(data, order, step, batch_size=batch_size)
        local = self._sharded_take(data, order, step, batch_size=batch_size)
        if self.process_count == 1:
            return local
        sharding = NamedSharding(self.mesh, P(DATA_AXIS))
        return jax.tree.map(
            lambda x: jax.make_array_from_single_device_arrays(
                (x.shape[0] * self.process_count, *x.shape[1:]), sharding,
                [shard.data for shard in sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)],
            ),
            local,
        )

    @functools.cached_property
    def _sharded_take(self):
        return jax.jit(take_batch, static_argnames="batch_size",
                       out_shardings=NamedSharding(self.local_mesh, P(DATA_AXIS)))

    def local(self, tree):
        """One device's copy of replicated arrays, so evaluation runs as on a single device, on each process."""
        if self.mesh is None:
            return tree
        return jax.tree.map(lambda x: x.addressable_data(0), tree)


def _global_from_identical(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a value every process holds alike (same seed), without cross-process traffic."""
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
