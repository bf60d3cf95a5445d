"""An amount of compute a replica asks for or an executor hands out."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlengine.config import Settings


@dataclass(frozen=True)
class Resources:
    """An amount of compute: CPUs (fractional allowed), memory in GB, whole GPUs."""

    cpus: float = 0.0
    memory_gb: float = 0.0
    gpus: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpus + other.cpus, self.memory_gb + other.memory_gb, self.gpus + other.gpus)

    def fits_in(self, capacity: Resources) -> bool:
        eps = 1e-9
        return (self.cpus <= capacity.cpus + eps and self.memory_gb <= capacity.memory_gb + eps
                and self.gpus <= capacity.gpus)

    def shortfall(self, capacity: Resources) -> list[str]:
        """What exceeds ``capacity``, in words (empty when it fits)."""
        out = []
        if self.cpus > capacity.cpus + 1e-9:
            out.append(f"{self.cpus:g} CPUs (has {capacity.cpus:g})")
        if self.memory_gb > capacity.memory_gb + 1e-9:
            out.append(f"{self.memory_gb:g} GB of memory (has {capacity.memory_gb:g})")
        if self.gpus > capacity.gpus:
            out.append(f"{self.gpus} GPUs (has {capacity.gpus})")
        return out

    def to_json(self) -> dict[str, float]:
        return {"cpus": self.cpus, "memoryGb": self.memory_gb, "gpus": self.gpus}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Resources:
        data = data or {}
        return cls(float(data.get("cpus", 0)), float(data.get("memoryGb", 0)), int(data.get("gpus", 0)))

    def describe(self) -> str:
        text = f"{self.cpus:g} CPUs, {self.memory_gb:g} GB"
        return text + (f", {self.gpus} GPUs" if self.gpus else "")


@dataclass(frozen=True)
class Capacity:
    """What an executor can hand out: in all, and per node (a replica never spans nodes)."""

    total: Resources
    nodes: list[Resources] = field(default_factory=list)
    #: Words for messages, e.g. "the local executor (MLE_CAPACITY_SLOTS=4)".
    label: str = "the executor"
    #: Whether a job needing more CPUs than ``total`` may still run, alone, with its replicas
    #: sharing the CPUs (one machine in ``process`` mode, as ``gcloud ai-platform local train
    #: --distributed`` does). Never GPUs or memory, and never across nodes.
    oversubscribable: bool = False


def memory_gb() -> float:
    """Physical memory of this machine in GB (MemTotal of /proc/meminfo)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 2)
    except OSError:
        pass
    return 0.0


@functools.lru_cache(maxsize=1)
def detected_gpus() -> int:
    """NVIDIA GPUs ``nvidia-smi -L`` lists (0 without the driver)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def machine_capacity(settings: Settings | None) -> Capacity:
    """This machine as the local executor hands it out."""
    cpus = float(settings.effective_slots if settings else (os.cpu_count() or 1))
    gpus = settings.local_gpus if settings and settings.local_gpus >= 0 else detected_gpus()
    total = Resources(cpus, memory_gb(), gpus)
    slots = f"MLE_CAPACITY_SLOTS={settings.capacity_slots}" if settings and settings.capacity_slots else \
        "MLE_CAPACITY_SLOTS unset: the number of CPUs"
    return Capacity(total, [total], f"the local executor ({cpus:g} CPU slots, {slots}; {gpus} GPUs)")
