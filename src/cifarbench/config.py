"""Typed, frozen, strict configuration read from ``params.yaml``.

Every stage calls :func:`load_params` first. The whole file is validated before any data is
read or any model built, so a typo anywhere (an unknown key, a wrong type, an out-of-range
value) stops the run within a second with a message that names the key, the value and what is
allowed. pydantic does the checking (strict types, ``extra="forbid"``); this module only
declares the schema and turns its errors into one readable :class:`ParamsError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

OFFICIAL_CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

PositiveInt = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or does not match the schema."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --------------------------------------------------------------------------------------- data


class DataConfig(_Strict):
    """Where the images come from and how they are prepared (stages download, prepare)."""

    source: str = OFFICIAL_CIFAR10_URL  # http(s):// or file:// URL, local archive or directory
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    md5: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{32}$")
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0  # per network read
    retries: Annotated[int, Field(ge=0, le=10)] = 3  # extra attempts after the first
    image_size: Annotated[int, Field(ge=8, le=512)] = 32  # images are resized to this square
    train_size: PositiveInt | None = None  # null = whole split; int = class-balanced subset
    test_size: PositiveInt | None = None


# ------------------------------------------------------------------------------------- models


class AugmentConfig(_Strict):
    """Batched, on-device augmentation (see ``augment.py``)."""

    flip: Literal["none", "random", "alternating"] = "alternating"
    translate: Annotated[int, Field(ge=0, le=8)] = 2  # pixels, reflect padding
    mixup_alpha: Annotated[float, Field(ge=0.0)] = 0.0  # 0 disables mixup
    cutmix_alpha: Annotated[float, Field(ge=0.0)] = 0.0  # 0 disables cutmix
    mix_prob: Fraction = 1.0  # probability that a batch is mixed (when mixup/cutmix on)
    mix_off_epochs: Annotated[float, Field(ge=0.0)] = 0.0  # last epochs trained unmixed (CCT)
    erasing_prob: Fraction = 0.0  # per-image probability of random erasing
    policy: Literal["none", "trivial"] = "none"  # trivial: TrivialAugment, one op per image
    policy_strength: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0  # max op magnitude (0-1)


class TrainConfig(_Strict):
    """The optimisation recipe of one model."""

    epochs: Annotated[float, Field(ge=1.0, le=10_000)]  # may be fractional (airbench: 9.9)
    batch_size: PositiveInt
    optimizer: Literal["sgd", "adamw"]
    lr: Annotated[float, Field(gt=0.0)]  # peak learning rate, after warm-up
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9  # SGD momentum / AdamW beta1
    beta2: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.999  # AdamW only
    nesterov: bool = True  # SGD only
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0  # decoupled for AdamW
    bias_lr_scale: Annotated[float, Field(gt=0.0)] = 1.0  # lr multiplier for norm/bias params
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    schedule: Literal["triangle", "cosine", "constant"] = "cosine"
    warmup_frac: Fraction = 0.05  # share of all steps spent warming up
    start_lr_frac: Fraction = 0.0  # lr at step 0, as a share of the peak
    final_lr_frac: Fraction = 0.0  # lr at the last step, as a share of the peak
    grad_clip: Annotated[float, Field(ge=0.0)] = 0.0  # max grad norm; 0 disables
    ema_decay: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # weight EMA per step; 0 = off
    lookahead: bool = False  # airbench's lookahead: every 5 steps pull weights to their EMA
    tta: Literal["none", "flip", "flip_translate"] = "none"  # test-time augmentation
    runs: PositiveInt = 1  # repeats with seeds seed, seed+1, ...; metrics give mean and std
    target_accuracy: Fraction = 0.9  # time-to-accuracy threshold (metric time_to_target_s)
    eval_every: PositiveInt = 1  # evaluate on the test split every N epochs (and at the end)
    compile: bool = False  # torch.compile the model (compile time reported apart)
    warmup_steps: Annotated[int, Field(ge=0)] = 0  # untimed steps before run 0 (then reset)
    breakdown_steps: Annotated[int, Field(ge=0, le=100)] = 5  # synchronised steps timed per part


class CNNArch(_Strict):
    """airbench-style conv net: frozen 2x2 whitening, three conv groups, linear head."""

    widths: Annotated[list[PositiveInt], Field(min_length=3, max_length=3)] = [64, 256, 256]
    whiten_width: PositiveInt = 24  # output channels of the 2x2 patch-whitening conv (2*3*2*2)
    bn_momentum: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.4  # PyTorch convention (weight of the new batch)
    bn_eps: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-12  # airbench: 1e-12
    logit_scale: Annotated[float, Field(gt=0.0)] = 1 / 9
    whiten_bias_epochs: Annotated[float, Field(ge=0.0)] = 3.0  # whitening bias frozen after these


class CNNModelConfig(_Strict):
    kind: Literal["cnn"]
    arch: CNNArch = CNNArch()
    train: TrainConfig
    augment: AugmentConfig = AugmentConfig()


class ViTArch(_Strict):
    """Plain ViT: patch embedding, pre-norm blocks, SDPA attention, cls or mean pooling."""

    patch_size: PositiveInt = 4
    dim: PositiveInt = 256
    depth: PositiveInt = 6
    heads: PositiveInt = 4
    mlp_ratio: Annotated[float, Field(gt=0.0, le=16.0)] = 2.0
    pool: Literal["cls", "mean"] = "mean"
    pos_embed: Literal["sincos", "learned"] = "sincos"  # fixed 2-D sin-cos trains faster
    tokenizer: Literal["patch", "conv"] = "patch"  # conv: CCT-style overlapping conv stem (a hybrid)
    dropout: Fraction = 0.0
    drop_path: Fraction = 0.0  # stochastic depth, linearly increasing to this value

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> ViTArch:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.tokenizer == "conv" and self.patch_size & (self.patch_size - 1):
            raise ValueError(f"tokenizer 'conv' needs a power-of-two patch_size, got {self.patch_size}")
        return self


class ViTModelConfig(_Strict):
    kind: Literal["vit"]
    arch: ViTArch = ViTArch()
    train: TrainConfig
    augment: AugmentConfig = AugmentConfig()


ModelConfig = Annotated[CNNModelConfig | ViTModelConfig, Field(discriminator="kind")]


# ---------------------------------------------------------------------------------- profile


class ProfileConfig(_Strict):
    """Inference measurement (stage profile)."""

    batch_sizes: Annotated[list[PositiveInt], Field(min_length=1)] = [1, 16, 64, 256, 1024]
    warmup_iters: Annotated[int, Field(ge=0)] = 5  # per configuration, before timing
    iters: PositiveInt = 20  # timed iterations per batch size
    latency_runs: Annotated[int, Field(ge=10)] = 200  # batch-1 samples for p50/p90/p99
    # fp32 = IEEE fp32; tf32 = fp32 with TF32 tensor cores (CUDA only, skipped on CPU)
    precisions: Annotated[list[Literal["fp32", "tf32", "autocast"]], Field(min_length=1)] = ["fp32", "autocast"]
    channels_last: bool = True  # also measure channels_last for conv nets
    compile: bool = False  # also measure a torch.compile'd model
    max_seconds_per_config: Annotated[float, Field(gt=0)] = 20.0  # caps iters on slow devices


class ReportConfig(_Strict):
    """Figures and tables (stage report)."""

    dpi: Annotated[int, Field(ge=72, le=600)] = 150
    # The data's name in every caption; None: the name the prepare stage gave it
    # (metrics/data.json "label": CIFAR-10, or the source's folder or archive name).
    data_label: Annotated[str, Field(min_length=1)] | None = None


# ------------------------------------------------------------------------------------- root


class Params(_Strict):
    seed: Annotated[int, Field(ge=0)] = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    threads: PositiveInt | None = None  # CPU threads for torch; null = all cores
    data: DataConfig = DataConfig()
    models: dict[str, ModelConfig]
    profile: ProfileConfig = ProfileConfig()
    report: ReportConfig = ReportConfig()

    def model(self, name: str) -> CNNModelConfig | ViTModelConfig:
        """The config of model ``name``, or a ParamsError listing the known names."""
        if name not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise ParamsError(f"params.yaml: models.{name}: no such model (known: {known})")
        return self.models[name]


def _loc(loc: tuple[Any, ...]) -> str:
    # pydantic adds the discriminator tag ("cnn"/"vit") to the location of union members;
    # drop it so the path matches params.yaml exactly.
    parts = [str(p) for p in loc]
    if len(parts) >= 3 and parts[0] == "models" and parts[2] in ("cnn", "vit"):
        del parts[2]
    return ".".join(parts)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters:"]
    for e in err.errors():
        key = _loc(e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (value {e['input']!r}); check the spelling")
        elif e["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        elif e["type"] == "union_tag_invalid":
            lines.append(f"  {key}.kind = {e['ctx']['tag']!r}: not a known model kind (allowed: cnn, vit)")
        elif e["type"] == "union_tag_not_found":
            lines.append(f"  {key}.kind: required (allowed: cnn, vit)")
        else:
            val = e.get("input")
            shown = "" if isinstance(val, dict) else f" = {val!r}"
            lines.append(f"  {key}{shown}: {e['msg']}")
    return "\n".join(lines)


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping (tests use this directly)."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_format_errors(err, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; raise :class:`ParamsError` on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read parameters ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(raw, str(path))
