"""Machine types: what one replica of a job asks for (CPUs, memory, GPUs).

Contract
--------
- :func:`machine_table` is the table of known types: AI Platform's legacy names (``standard``,
  ``large_model``, ``complex_model_s/m/l``, the ``*_gpu``/``*_p100``/``*_v100`` variants), the
  Compute Engine families ``n1-``/``n2-``/``e2-``/``c2-`` ``standard|highmem|highcpu-N`` and
  ``a2-highgpu-Kg``, plus the user's own types from a YAML file (``MLE_MACHINE_TYPES``, else
  ``MLE_HOME/machine_types.yaml`` when it exists)::

      tiny:   {cpus: 0.5, memoryGb: 0.5}
      gpubox: {cpus: 8, memoryGb: 30, gpus: 2, gpuType: NVIDIA_TESLA_T4}

  A user type of the same name replaces the built-in one.
- :func:`replica_resources` turns a validated ``trainingInput`` into one :class:`Resources`
  per replica (task type order of :data:`cluster.TASK_ORDER`): the tier's (or the
  ``*Type`` field's) machine type plus ``*Config.acceleratorConfig`` GPUs. Every error names
  the field (``trainingInput.workerType``, ``trainingInput.masterConfig.acceleratorConfig``).
- Pure functions; the YAML file is re-read when its modification time changes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlengine.errors import invalid
from mlengine.jobs.resources import Resources

GPU_TYPES = (
    "NVIDIA_TESLA_K80", "NVIDIA_TESLA_P4", "NVIDIA_TESLA_P100", "NVIDIA_TESLA_T4",
    "NVIDIA_TESLA_V100", "NVIDIA_TESLA_A100", "NVIDIA_A100_80GB", "NVIDIA_L4", "NVIDIA_H100_80GB",
)
TPU_TYPES = ("TPU_V2", "TPU_V3", "TPU_V2_POD", "TPU_V3_POD", "TPU_V4_POD")

#: Per task type: the field naming its machine type and the field holding its config.
TYPE_FIELDS = {
    "master": ("masterType", "masterConfig"),
    "chief": ("masterType", "masterConfig"),
    "worker": ("workerType", "workerConfig"),
    "ps": ("parameterServerType", "parameterServerConfig"),
    "evaluator": ("evaluatorType", "evaluatorConfig"),
}


@dataclass(frozen=True)
class MachineType:
    name: str
    cpus: float
    memory_gb: float
    gpus: int = 0
    gpu_type: str | None = None

    @property
    def resources(self) -> Resources:
        return Resources(self.cpus, self.memory_gb, self.gpus)


def _builtin() -> dict[str, MachineType]:
    table: dict[str, MachineType] = {}

    def add(name: str, cpus: float, memory: float, gpus: int = 0, gpu_type: str | None = None) -> None:
        table[name] = MachineType(name, cpus, memory, gpus, gpu_type)

    # AI Platform's legacy names (their documented Compute Engine equivalents).
    add("standard", 4, 15)
    add("large_model", 8, 52)
    add("complex_model_s", 8, 7.2)
    add("complex_model_m", 16, 14.4)
    add("complex_model_l", 32, 28.8)
    add("standard_gpu", 8, 30, 1, "NVIDIA_TESLA_K80")
    add("complex_model_m_gpu", 16, 60, 4, "NVIDIA_TESLA_K80")
    add("complex_model_l_gpu", 32, 120, 8, "NVIDIA_TESLA_K80")
    add("standard_p100", 8, 30, 1, "NVIDIA_TESLA_P100")
    add("complex_model_m_p100", 16, 60, 4, "NVIDIA_TESLA_P100")
    add("standard_v100", 8, 30, 1, "NVIDIA_TESLA_V100")
    add("large_model_v100", 16, 104, 1, "NVIDIA_TESLA_V100")
    add("complex_model_m_v100", 16, 60, 4, "NVIDIA_TESLA_V100")
    add("complex_model_l_v100", 32, 120, 8, "NVIDIA_TESLA_V100")
    # Compute Engine families: GB of memory per vCPU.
    families = {
        "n1-standard": (3.75, (1, 2, 4, 8, 16, 32, 64, 96)),
        "n1-highmem": (6.5, (2, 4, 8, 16, 32, 64, 96)),
        "n1-highcpu": (0.9, (2, 4, 8, 16, 32, 64, 96)),
        "n2-standard": (4.0, (2, 4, 8, 16, 32, 48, 64, 80, 96, 128)),
        "n2-highmem": (8.0, (2, 4, 8, 16, 32, 48, 64, 80, 96, 128)),
        "n2-highcpu": (1.0, (2, 4, 8, 16, 32, 48, 64, 80, 96)),
        "e2-standard": (4.0, (2, 4, 8, 16, 32)),
        "e2-highmem": (8.0, (2, 4, 8, 16)),
        "e2-highcpu": (1.0, (2, 4, 8, 16, 32)),
        "c2-standard": (4.0, (4, 8, 16, 30, 60)),
    }
    for family, (per_cpu, sizes) in families.items():
        for n in sizes:
            add(f"{family}-{n}", n, round(per_cpu * n, 2))
    add("e2-micro", 0.25, 1)
    add("e2-small", 0.5, 2)
    add("e2-medium", 1, 4)
    for k, (cpus, memory) in {1: (12, 85), 2: (24, 170), 4: (48, 340), 8: (96, 680)}.items():
        add(f"a2-highgpu-{k}g", cpus, memory, k, "NVIDIA_TESLA_A100")
    return table


BUILTIN = _builtin()
#: Machine type of each replica of the predefined scale tiers (master, worker, ps).
TIER_TYPES: dict[str, tuple[str, str, str]] = {
    "BASIC": ("n1-standard-4", "n1-standard-4", "n1-standard-4"),
    "STANDARD_1": ("n1-highcpu-8", "n1-highcpu-8", "n1-standard-4"),
    "PREMIUM_1": ("n1-highcpu-16", "n1-highcpu-16", "n1-highmem-8"),
    "BASIC_GPU": ("standard_gpu", "standard_gpu", "standard_gpu"),
}

_cache_lock = threading.Lock()
_cache: dict[str, tuple[float, dict[str, MachineType]]] = {}


def _number(value: Any, where: str, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise invalid(where, f"must be a non-negative number, got {value!r}")
    if integer and int(value) != value:
        raise invalid(where, f"must be a whole number, got {value!r}")
    return float(value)


def load_user_types(path: Path) -> dict[str, MachineType]:
    """Machine types from a YAML mapping ``name: {cpus, memoryGb, gpus, gpuType}``."""
    import yaml

    try:
        stamp = path.stat().st_mtime
    except OSError:
        return {}
    key = str(path)
    with _cache_lock:
        cached = _cache.get(key)
        if cached and cached[0] == stamp:
            return cached[1]
    where = f"machine types file {path}"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise invalid(where, f"cannot be read: {exc}") from None
    if not isinstance(data, Mapping):
        raise invalid(where, "must be a mapping of machine type names to {cpus, memoryGb, gpus}")
    types: dict[str, MachineType] = {}
    for name, spec in data.items():
        if not isinstance(spec, Mapping):
            raise invalid(f"{where}: {name}", "must be a mapping with cpus, memoryGb and optionally gpus")
        unknown = set(spec) - {"cpus", "memoryGb", "gpus", "gpuType"}
        if unknown:
            raise invalid(f"{where}: {name}", f"unknown keys {sorted(unknown)}; use cpus, memoryGb, gpus, gpuType")
        if "cpus" not in spec:
            raise invalid(f"{where}: {name}.cpus", "is required")
        types[str(name)] = MachineType(
            str(name), _number(spec["cpus"], f"{where}: {name}.cpus"),
            _number(spec.get("memoryGb", 0), f"{where}: {name}.memoryGb"),
            int(_number(spec.get("gpus", 0), f"{where}: {name}.gpus", integer=True)),
            spec.get("gpuType"),
        )
    with _cache_lock:
        _cache[key] = (stamp, types)
    return types


def machine_table(user_file: Path | None = None) -> dict[str, MachineType]:
    """Built-in machine types plus (overridden by) the user's."""
    table = dict(BUILTIN)
    if user_file is not None:
        table.update(load_user_types(user_file))
    return table


def lookup(name: Any, field: str, table: Mapping[str, MachineType]) -> MachineType:
    if not isinstance(name, str) or not name:
        raise invalid(field, "must be a machine type name, e.g. n1-standard-4")
    if name in table:
        return table[name]
    if name == "cloud_tpu" or name.startswith("tpu"):
        raise invalid(field, f"{name!r}: TPUs are not available on mlengine")
    close = sorted(n for n in table if n.split("-")[0] == name.split("-")[0] or n.startswith(name[:4]))[:8]
    hint = f"; similar known types: {', '.join(close)}" if close else ""
    raise invalid(field, f"unknown machine type {name!r}{hint}. Add your own in MLE_MACHINE_TYPES "
                         "(a YAML file: NAME: {cpus: N, memoryGb: N, gpus: N})")


def accelerator_gpus(training_input: Mapping[str, Any], config_field: str) -> int:
    """GPUs a ``*Config.acceleratorConfig`` adds (validated); 0 without one."""
    config = training_input.get(config_field) or {}
    if not isinstance(config, Mapping):
        raise invalid(f"trainingInput.{config_field}", "must be an object")
    accel = config.get("acceleratorConfig")
    if accel is None:
        return 0
    field = f"trainingInput.{config_field}.acceleratorConfig"
    if not isinstance(accel, Mapping):
        raise invalid(field, "must be an object with count and type")
    kind = accel.get("type")
    if kind in TPU_TYPES:
        raise invalid(f"{field}.type", f"{kind}: TPUs are not available on mlengine")
    if kind not in GPU_TYPES:
        raise invalid(f"{field}.type", f"unknown accelerator type {kind!r}; valid: {', '.join(GPU_TYPES)}")
    try:
        count = int(accel.get("count", 0))
    except (TypeError, ValueError):
        raise invalid(f"{field}.count", f"must be an integer, got {accel.get('count')!r}") from None
    if count < 1 or count > 16:
        raise invalid(f"{field}.count", f"must be between 1 and 16, got {count}")
    return count


def replica_machine(training_input: Mapping[str, Any], task_type: str,
                    table: Mapping[str, MachineType]) -> tuple[MachineType, Resources]:
    """The machine type of one replica of ``task_type`` and the resources it asks for."""
    tier = training_input.get("scaleTier") or "BASIC"
    type_field, config_field = TYPE_FIELDS[task_type]
    if tier == "CUSTOM":
        name = training_input.get(type_field)
        if not name and task_type != "master" and task_type != "chief":
            name = training_input.get("masterType")  # AI Platform: workers default to the master's type
        machine = lookup(name, f"trainingInput.{type_field}", table)
        gpus = accelerator_gpus(training_input, config_field)
    else:
        position = {"master": 0, "chief": 0, "worker": 1, "ps": 2, "evaluator": 1}[task_type]
        machine = table.get(TIER_TYPES[tier][position]) or BUILTIN[TIER_TYPES[tier][position]]
        gpus = 0
    resources = machine.resources
    if gpus:
        if machine.gpus:
            raise invalid(f"trainingInput.{config_field}.acceleratorConfig",
                          f"{machine.name} already comes with {machine.gpus} GPU(s); use a machine type "
                          "without GPUs (e.g. n1-standard-8) to choose them with acceleratorConfig")
        resources = Resources(resources.cpus, resources.memory_gb, gpus)
    return machine, resources


def replica_resources(training_input: Mapping[str, Any], counts: Mapping[str, int],
                      table: Mapping[str, MachineType]) -> dict[str, Resources]:
    """Resources one replica of each task type in ``counts`` asks for."""
    return {t: replica_machine(training_input, t, table)[1] for t, n in counts.items() if n}
