"""Typed, frozen, strict configuration read from ``params.yaml``.

Every stage calls :func:`load_params` first. The whole file is validated before any data is
read or any model built, so a typo anywhere (an unknown key, a wrong type, an out-of-range
value) stops the run within a second with a message that names the key, the value and what is
allowed. pydantic does the checking (strict types, ``extra="forbid"``); this module only
declares the schema and turns its errors into one readable :class:`ParamsError`.

params.yaml is the one home of every value (DVC reads it to decide what reruns), so the schema
has no defaults: every key is required, and a key removed from the file is an error naming it.
The schema says what is allowed; the file says what is used, with its unit.
"""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

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

    source: str  # http(s):// or file:// URL, local archive or directory
    sha256: str | None = Field(pattern=r"^[0-9a-fA-F]{64}$")
    md5: str | None = Field(pattern=r"^[0-9a-fA-F]{32}$")
    timeout_s: Annotated[float, Field(gt=0, le=600)]  # per network read
    retries: Annotated[int, Field(ge=0, le=10)]  # extra attempts after the first
    image_size: Annotated[int, Field(ge=8, le=512)]  # images are resized to this square
    train_size: PositiveInt | None  # null = whole split; int = class-balanced subset
    test_size: PositiveInt | None
    # Caps on what a source may cost (README: Limits and caps); raise them for bigger data.
    max_source_gib: Annotated[float, Field(gt=0)]  # download / copy into data/raw
    max_unpacked_gib: Annotated[float, Field(gt=0)]  # all files of the source, unpacked
    max_member_mib: Annotated[float, Field(gt=0)]  # one archive member or file
    max_members: PositiveInt  # files, folders and links in the source
    max_image_mpx: Annotated[float, Field(gt=0, le=178)]  # decoded pixels of one image
    max_arrays_gib: Annotated[float, Field(gt=0)]  # prepare's in-memory image arrays
    min_rate_kib_s: Annotated[float, Field(ge=0)]  # mean over each timeout_s window
    download_deadline_s: Annotated[float, Field(gt=0)]  # whole download, retries too


# ------------------------------------------------------------------------------------- models


class AugmentConfig(_Strict):
    """Batched, on-device augmentation (see ``augment.py``)."""

    flip: Literal["none", "random", "alternating"]
    translate: Annotated[int, Field(ge=0, le=8)]  # pixels, reflect padding
    mixup_alpha: Annotated[float, Field(ge=0.0)]  # 0 disables mixup
    cutmix_alpha: Annotated[float, Field(ge=0.0)]  # 0 disables cutmix
    mix_prob: Fraction  # probability that a batch is mixed (when mixup/cutmix on)
    mix_off_epochs: Annotated[float, Field(ge=0.0)]  # last epochs trained unmixed (CCT)
    erasing_prob: Fraction  # per-image probability of random erasing
    policy: Literal["none", "trivial"]  # trivial: TrivialAugment, one op per image
    policy_strength: Annotated[float, Field(gt=0.0, le=1.0)]  # max op magnitude (0-1)


class TrainConfig(_Strict):
    """The optimisation recipe of one model."""

    epochs: Annotated[float, Field(ge=1.0, le=10_000)]  # may be fractional (airbench: 9.9)
    # What `epochs` holds fixed when data.train_size shrinks the split (budget_epoch_steps):
    # "epochs" = passes over the subset; "steps" = the optimizer steps of `epochs` passes over
    # the source's whole train split (a smaller subset is seen more often).
    budget: Literal["epochs", "steps"]
    batch_size: PositiveInt
    optimizer: Literal["sgd", "adamw"]
    lr: Annotated[float, Field(gt=0.0)]  # peak learning rate, after warm-up
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)]  # SGD momentum / AdamW beta1
    beta2: Annotated[float, Field(gt=0.0, lt=1.0)]  # AdamW only
    nesterov: bool  # SGD only
    weight_decay: Annotated[float, Field(ge=0.0)]  # decoupled for AdamW
    bias_lr_scale: Annotated[float, Field(gt=0.0)]  # lr multiplier for norm/bias params
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)]
    schedule: Literal["triangle", "cosine", "constant"]
    warmup_frac: Fraction  # share of all steps spent warming up
    start_lr_frac: Fraction  # lr at step 0, as a share of the peak
    final_lr_frac: Fraction  # lr at the last step, as a share of the peak
    grad_clip: Annotated[float, Field(ge=0.0)]  # max grad norm; 0 disables
    ema_decay: Annotated[float, Field(ge=0.0, lt=1.0)]  # weight EMA per step; 0 = off
    lookahead: bool  # airbench's lookahead: every 5 steps pull weights to their EMA
    tta: Literal["none", "flip", "flip_translate"]  # test-time augmentation
    runs: PositiveInt  # repeats with seeds seed, seed+1, ...; metrics give mean and std
    target_accuracy: Fraction  # time-to-accuracy threshold (metric time_to_target_s)
    eval_every: PositiveInt  # evaluate on the test split every N epochs (and at the end)
    compile: bool  # torch.compile the model (compile time reported apart)
    warmup_steps: Annotated[int, Field(ge=0)]  # untimed steps before run 0 (then reset)
    breakdown_steps: Annotated[int, Field(ge=0, le=100)]  # synchronised steps timed per part


class Budget(Protocol):
    """What :func:`budget_epochs` reads of a TrainConfig (the study passes plain values too)."""

    @property
    def budget(self) -> str: ...
    @property
    def epochs(self) -> float: ...
    @property
    def batch_size(self) -> int: ...


def budget_epoch_steps(train: Budget, train_images: int, full_train_images: int) -> int:
    """Optimizer steps in one epoch of the budget, the unit of ``epochs``, ``eval_every``,
    ``mix_off_epochs`` and ``whiten_bias_epochs``: a pass over the ``train_images`` used
    (``budget: epochs``) or over the source's whole train split of ``full_train_images``
    (``budget: steps``). Steps are counted as the training loop counts them: ``n // batch`` per
    pass (the last partial batch is dropped), with the batch capped at ``n``."""
    if train_images < 1 or full_train_images < train_images:
        raise ValueError(f"need 1 <= train_images ({train_images}) <= full_train_images "
                         f"({full_train_images})")
    n = full_train_images if train.budget == "steps" else train_images
    return n // min(train.batch_size, n)


def budget_epochs(train: Budget, train_images: int, full_train_images: int) -> float:
    """Passes over the ``train_images`` used that ``train.epochs`` epochs of the budget make.

    ``epochs``: ``train.epochs`` passes, so a subset of 1/16 of the split gets 1/16 of the
    optimizer steps. ``steps``: as many optimizer steps as ``train.epochs`` passes over the whole
    split, so every subset gets the same steps and training FLOPs, and a subset of 1/16 is
    passed over about 16 times as often.
    """
    passes = budget_epoch_steps(train, train_images, full_train_images)
    return train.epochs * passes / (train_images // min(train.batch_size, train_images))


class CNNArch(_Strict):
    """airbench-style conv net: frozen 2x2 whitening, three conv groups, linear head."""

    widths: Annotated[list[PositiveInt], Field(min_length=3, max_length=3)]
    whiten_width: PositiveInt  # output channels of the 2x2 patch-whitening conv (2*3*2*2)
    bn_momentum: Annotated[float, Field(gt=0.0, lt=1.0)]  # PyTorch convention (weight of the new batch)
    bn_eps: Annotated[float, Field(gt=0.0, le=1.0)]
    logit_scale: Annotated[float, Field(gt=0.0)]
    whiten_bias_epochs: Annotated[float, Field(ge=0.0)]  # whitening bias frozen after these


class CNNModelConfig(_Strict):
    kind: Literal["cnn"]
    arch: CNNArch
    train: TrainConfig
    augment: AugmentConfig


# The ViT's enumerated options; models/vit.py types its constructor with these.
Pool = Literal["cls", "mean"]
PosEmbed = Literal["sincos", "learned"]  # fixed 2-D sin-cos trains faster
Tokenizer = Literal["patch", "conv"]  # conv: CCT-style overlapping conv stem (a hybrid)


class ViTArch(_Strict):
    """Plain ViT: patch embedding, pre-norm blocks, SDPA attention, cls or mean pooling.
    (patch_size against data.image_size is checked in :class:`Params`.)"""

    patch_size: PositiveInt
    dim: PositiveInt
    depth: PositiveInt
    heads: PositiveInt
    mlp_ratio: Annotated[float, Field(gt=0.0, le=16.0)]
    pool: Pool
    pos_embed: PosEmbed
    tokenizer: Tokenizer
    dropout: Fraction
    drop_path: Fraction  # stochastic depth, linearly increasing to this value

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> ViTArch:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        return self


class ViTModelConfig(_Strict):
    kind: Literal["vit"]
    arch: ViTArch
    train: TrainConfig
    augment: AugmentConfig


ModelConfig = Annotated[CNNModelConfig | ViTModelConfig, Field(discriminator="kind")]


# ---------------------------------------------------------------------------------- profile


class ProfileConfig(_Strict):
    """Inference measurement (stage profile)."""

    batch_sizes: Annotated[list[PositiveInt], Field(min_length=1)]
    warmup_iters: Annotated[int, Field(ge=0)]  # per configuration, before timing
    iters: PositiveInt  # timed iterations per batch size
    latency_runs: Annotated[int, Field(ge=10)]  # batch-1 samples for p50/p90/p99
    # fp32 = IEEE fp32; tf32 = fp32 with TF32 tensor cores (CUDA only, skipped on CPU)
    precisions: Annotated[list[Literal["fp32", "tf32", "autocast"]], Field(min_length=1)]
    channels_last: bool  # also measure channels_last for conv nets
    compile: bool  # also measure a torch.compile'd model
    max_seconds_per_config: Annotated[float, Field(gt=0)]  # caps iters on slow devices


class ReportConfig(_Strict):
    """Figures and tables (stage report)."""

    dpi: Annotated[int, Field(ge=72, le=600)]
    # The data's name in every caption; None: the name the prepare stage gave it
    # (metrics/data.json "label": CIFAR-10, or the source's folder or archive name).
    data_label: Annotated[str, Field(min_length=1)] | None


# ------------------------------------------------------------------------------------- root


class Params(_Strict):
    seed: Annotated[int, Field(ge=0)]
    device: Literal["auto", "cpu", "cuda"]
    precision: Literal["auto", "fp32", "bf16", "fp16"]
    threads: PositiveInt | None  # CPU threads for torch; null = all cores
    data: DataConfig
    models: dict[str, ModelConfig]
    profile: ProfileConfig
    report: ReportConfig

    @model_validator(mode="after")
    def _vit_tokens_match_positions(self) -> Params:
        """A ViT has one position embedding per patch, (image_size / patch_size)^2; its
        tokenizer must give exactly that many tokens, or the first forward pass fails."""
        size = self.data.image_size
        for name, cfg in self.models.items():
            if not isinstance(cfg, ViTModelConfig):
                continue
            p = cfg.arch.patch_size
            key = f"models.{name}.arch.patch_size = {p}"
            if size % p:
                raise ValueError(f"{key}: does not divide data.image_size = {size}; the ViT cuts "
                                 "the image into (image_size / patch_size)^2 patches")
            if cfg.arch.tokenizer == "conv" and (p < 2 or p & (p - 1)):
                raise ValueError(f"{key}: tokenizer 'conv' halves the image once per conv layer, "
                                 "log2(patch_size) layers (at least one), so it gives the "
                                 f"(image_size / patch_size)^2 = {(size // p) ** 2} tokens the "
                                 "position embedding has only when patch_size is a power of two "
                                 ">= 2; use one, or tokenizer 'patch'")
        return self

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


# Error messages show at most this much of any value or key a user wrote (a params.yaml can
# hold a megabyte string or a deep structure); reprlib also stops at a few levels and items.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 2, 60, 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
MAX_ERROR_LINES = 20


def _show(value: Any) -> str:
    return _clip(_REPR.repr(value), 100)


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters:"]
    errors = err.errors()
    for e in errors[:MAX_ERROR_LINES]:
        key = _clip(_loc(e["loc"]))
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (value {_show(e['input'])}); check the spelling")
        elif e["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        elif e["type"] == "union_tag_invalid":
            lines.append(f"  {key}.kind = {_show(e['ctx']['tag'])}: not a known model kind "
                         "(allowed: cnn, vit)")
        elif e["type"] == "union_tag_not_found":
            lines.append(f"  {key}.kind: required (allowed: cnn, vit)")
        elif e["type"] == "value_error" and not e["loc"]:  # a check across sections names its keys
            lines.append(f"  {_clip(str(e['ctx']['error']), 300)}")
        else:
            val = e.get("input")
            shown = "" if isinstance(val, dict) else f" = {_show(val)}"
            lines.append(f"  {key}{shown}: {_clip(e['msg'], 300)}")
    if len(errors) > MAX_ERROR_LINES:
        lines.append(f"  ... and {len(errors) - MAX_ERROR_LINES} more")
    return "\n".join(lines)


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping (tests use this directly)."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_format_errors(err, source)) from None


MAX_PARAMS_BYTES = 1 << 20  # a params.yaml is a few kB; refuse to parse more than 1 MiB
MAX_PARAMS_VALUES = 100_000  # values after expanding YAML aliases (the project's file: ~150)


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2 floats without a dot (``1e-12``): PyYAML follows
    YAML 1.1 and would read them as strings, while DVC (ruamel.yaml, YAML 1.2) reads floats."""


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; raise :class:`ParamsError` on any problem.

    Nothing in the file can make this hang or exhaust memory: its size is capped, YAML aliases
    may expand to at most :data:`MAX_PARAMS_VALUES` values (an "alias bomb" is refused, so is
    a structure that contains itself), and every problem is reported in one line.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PARAMS_BYTES + 1)
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read parameters ({exc.strerror})") from None
    if len(data) > MAX_PARAMS_BYTES:
        raise ParamsError(f"{path}: larger than {MAX_PARAMS_BYTES >> 20} MiB; not a parameters "
                          "file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start}); save it as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_ParamsLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or type(exc).__name__
        raise ParamsError(f"{path}: not valid YAML: {_clip(' '.join(problem.split()))}"
                          f"{where}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {_clip(' '.join(str(exc).split()))}") \
            from None
    except RecursionError:
        raise ParamsError(f"{path}: not valid YAML: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ParamsError(f"{path}: not valid YAML: {_clip(' '.join(str(exc).split()))}") \
            from None
    _check_expanded_size(raw, str(path))
    return parse_params(raw, str(path))


def _check_expanded_size(raw: Any, source: str) -> None:
    """Refuse YAML whose aliases expand beyond MAX_PARAMS_VALUES values, or that contains itself.

    safe_load shares one object per anchor, so loading a bomb is cheap; anything that walks
    it (validation, an error message) pays the expanded size. Sizes are memoised per object,
    so this check costs one visit per distinct object, not per expanded value.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ParamsError(f"{source}: a YAML alias refers to a structure that contains it; "
                              "expand it by hand")
        active.add(key)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_PARAMS_VALUES:
                raise ParamsError(f"{source}: YAML aliases expand to more than "
                                  f"{MAX_PARAMS_VALUES} values; refusing to read it (an alias "
                                  "bomb?)")
        active.discard(key)
        sizes[key] = total
        return total

    try:
        size(raw)
    except RecursionError:
        raise ParamsError(f"{source}: nested too deeply") from None
