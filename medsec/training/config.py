"""The training package's own settings: the ``train`` section and a classifier recipe.

A :class:`ClassifierRecipe` is everything needed to train one classifier (network,
optimisation, seed, split limits); capability packages take it instead of the whole config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from medsec.config_base import StrictModel
from medsec.models.config import ModelConfig

if TYPE_CHECKING:  # torch: kept out of the config import
    from medsec.data.types import ImageDataset, LoadedDataset


Precision = Annotated[Literal["32", "16-mixed", "bf16-mixed"], BeforeValidator(str)]
"""Lightning precision: ``32`` (float32), ``16-mixed`` (float16 autocast, GPU) or
``bf16-mixed`` (bfloat16 autocast; CPU and GPU). ``32`` in YAML (an int) is accepted."""


class Hardware(StrictModel):
    """Where and how a model trains: the ``train`` keys ``accelerator`` (``auto``: a GPU when
    torch sees one, else the CPU; ``gpu`` without one is a ConfigError), ``devices`` (processes;
    more than 1 needs ``strategy: ddp``), ``precision`` and ``strategy`` (``auto``: one process;
    ``ddp``: Lightning DistributedDataParallel, one process per device, gloo on CPU)."""

    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int = Field(default=1, gt=0, le=64)
    precision: Precision = "32"
    strategy: Literal["auto", "ddp"] = "auto"

    @model_validator(mode="after")
    def _consistent(self) -> Hardware:
        check_hardware(self.accelerator, self.devices, self.strategy)
        return self


def check_hardware(accelerator: str, devices: int, strategy: str) -> None:
    """ValueError naming ``train.devices`` (more than one without ``strategy: ddp``) or
    ``train.accelerator`` (``gpu`` where torch sees no CUDA GPU, or fewer than ``devices``)."""
    if devices > 1 and strategy != "ddp":
        raise ValueError(f"train.devices: {devices} devices need train.strategy: ddp "
                         "(one process per device)")
    if accelerator == "gpu":
        from medsec.training.devices import require_gpu  # torch only when a GPU is asked

        require_gpu(devices)


_DEFAULT_HARDWARE: list[Hardware] = [Hardware()]


def use_hardware(hardware: Hardware) -> None:
    """Make ``hardware`` the process default of every fit and model load that is not given one
    (set once per stage from ``train``, like ``torch.set_num_threads``).

    Pipeline stages train in their own process: several devices (DDP re-runs the command line
    once per rank) are a ValueError naming ``train.devices``; run DDP from a script instead.
    """
    if hardware.devices > 1:
        from medsec.errors import ConfigError

        raise ConfigError(
            f"train.devices: {hardware.devices} processes (DDP) run from a Python script that "
            "calls medsec.training.job.train_classifier (README 'Devices and multi-process "
            "training'); the pipeline stages train in one process: set train.devices=1")
    _DEFAULT_HARDWARE[0] = hardware


def default_hardware() -> Hardware:
    """The process default set by :func:`use_hardware` (``Hardware()``: auto, 1 device, 32)."""
    return _DEFAULT_HARDWARE[0]


class TrainConfig(StrictModel):
    """The ``train`` section: optimisation plus the :class:`Hardware` keys (``accelerator``,
    ``devices``, ``precision``, ``strategy``)."""

    epochs: int = Field(default=5, gt=0, le=1000)
    batch_size: int = Field(default=64, gt=0)
    lr: float = Field(default=1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    augment: bool = False
    select_best: bool = True
    num_threads: int | None = Field(default=None, gt=0)
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int = Field(default=1, gt=0, le=64)
    precision: Precision = "32"
    strategy: Literal["auto", "ddp"] = "auto"

    @model_validator(mode="after")
    def _hardware_valid(self) -> TrainConfig:
        check_hardware(self.accelerator, self.devices, self.strategy)
        return self

    def hardware(self) -> Hardware:
        """The :class:`Hardware` of this section."""
        return Hardware(accelerator=self.accelerator, devices=self.devices,
                        precision=self.precision, strategy=self.strategy)


class ClassifierRecipe(StrictModel):
    """Network + optimisation + seed + split limits (``max_train`` / ``max_eval``: None = all)."""

    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    seed: int = 0
    max_train: int | None = Field(default=None, gt=0)
    max_eval: int | None = Field(default=None, gt=0)

    def split(self, data: LoadedDataset, name: str) -> ImageDataset:
        """Split ``name`` of ``data``, truncated to ``max_train`` (train) / ``max_eval``."""
        return data.splits[name].head(self.max_train if name == "train" else self.max_eval)

    def derive(self, epochs: int | None = None, seed: int | None = None,
               whole_splits: bool = False) -> ClassifierRecipe:
        """A copy with ``train.epochs`` / ``seed`` replaced (None: unchanged) and, with
        ``whole_splits``, no split truncation."""
        update: dict = {}
        if epochs is not None:
            update["train"] = self.train.model_copy(update={"epochs": epochs})
        if seed is not None:
            update["seed"] = seed
        if whole_splits:
            update |= {"max_train": None, "max_eval": None}
        return self.model_copy(update=update)
