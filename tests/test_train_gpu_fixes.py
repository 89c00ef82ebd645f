"""What the GPU review of the training loop found (issue 9), on the CPU: warm-up outside the
timed runs, time to target on the accuracy the target is defined on, host-side augmentation
scalars, per-run RNG for stochastic depth, airbench's TTA weights, whitening-bias freeze, true
fp32, and the separate timing-breakdown pass."""

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import CPU32, cfg, tiny_data
from torch import nn

from cifarbench import augment
from cifarbench.config import parse_params
from cifarbench.models import build_model
from cifarbench.profiling.breakdown import step_breakdown_ms
from cifarbench.runtime import resolve_runtime, tf32, tf32_enabled
from cifarbench.train import Trainer, evaluate, make_optimizer, train_run, train_runs

DEVNULL = open("/dev/null", "w")  # noqa: SIM115 - shared sink for training logs


class SlowFirstCall(nn.Module):
    """Wraps a model; its first training forward sleeps, like cuDNN autotuning or compilation."""

    def __init__(self, inner: nn.Module, delay_s: float) -> None:
        super().__init__()
        self.inner, self.delay_s, self.calls = inner, delay_s, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls == 1:
                time.sleep(self.delay_s)
        return self.inner(x)


def test_warmup_is_excluded_from_the_timed_runs() -> None:
    c = cfg("vit", epochs=1, runs=2, warmup_steps=2)
    data = tiny_data()
    training = train_runs(lambda: SlowFirstCall(build_model(c, num_classes=3, image_size=16), 3.0),
                          data, c, CPU32, seed=0, name="vit")
    assert training.warmup_time_s >= 3.0
    assert all(r.train_time_s < 3.0 for r in training.runs), [r.train_time_s for r in training.runs]


def test_warmup_does_not_change_the_results() -> None:
    """The warm-up trains a throwaway copy: run 0 starts from the seed's initialisation."""
    def runs(warmup: int) -> list[float]:
        c = cfg("cnn", epochs=2, runs=1, warmup_steps=warmup)
        t = train_runs(lambda: build_model(c, num_classes=3, image_size=16), tiny_data(), c, CPU32,
                       seed=3, name="cnn", log=DEVNULL)
        return [x["train_loss"] for x in t.runs[0].curves] + [t.runs[0].test_accuracy]

    assert runs(0) == runs(3)


def test_time_to_target_uses_the_tta_accuracy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The target is defined on the reported (TTA) accuracy: a target met only with TTA is met."""
    import cifarbench.train as train

    def fake_evaluate(model, data, rt, *, tta="none", batch_size=1000):
        acc = 0.95 if tta == "flip_translate" else 0.93
        return acc, 0.1, torch.zeros(len(data.y_test), dtype=torch.int64)

    monkeypatch.setattr(train, "evaluate", fake_evaluate)
    c = cfg("cnn", epochs=2, target_accuracy=0.94, tta="flip_translate")
    torch.manual_seed(0)
    r = train_run(build_model(c, num_classes=3, image_size=16), tiny_data(), c, CPU32, seed=0,
                  name="cnn")
    assert r.time_to_target_s is not None and r.time_to_target_s == r.curves[0]["elapsed_s"]
    assert r.curves[0]["test_accuracy"] == 0.95


def test_mix_batch_reads_nothing_back_from_the_device() -> None:
    """Every per-batch scalar comes from the host generator: on the meta device (where any
    read-back fails) mixup and cutmix still run."""
    x = torch.empty(8, 3, 16, 16, device="meta")
    t = torch.empty(8, 4, device="meta")
    host = np.random.default_rng(0)
    for mixup, cutmix in [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)]:
        for _ in range(5):
            xm, tm = augment.mix_batch(x, t, mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0,
                                       host=host)
            assert xm.shape == x.shape and tm.shape == t.shape


def test_stochastic_depth_follows_the_run_seed() -> None:
    """A run does not depend on the global RNG state it starts from."""
    c = cfg("vit", epochs=1)
    c = c.model_copy(update={"arch": c.arch.model_copy(update={"drop_path": 0.5})})
    losses = []
    for noise in (1, 2):
        torch.manual_seed(0)
        model = build_model(c, num_classes=3, image_size=16)
        torch.manual_seed(noise)  # whatever ran before this run
        torch.rand(noise * 7)
        r = train_run(model, tiny_data(), c, CPU32, seed=0, name="vit")
        losses.append(r.curves[0]["train_loss"])
    assert losses[0] == losses[1]


class Probe(nn.Module):
    """Logits that reveal which TTA view was seen: the mean of each input's first column and
    of its last column, per image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 0, :, 0].mean(1), x[:, 0, :, -1].mean(1)], dim=1)


def test_flip_translate_tta_weights_are_airbench_s() -> None:
    data = tiny_data(n_test=4, size=8)
    model = Probe()
    x = data.normalize(data.x_test)
    pair = lambda v: 0.5 * (model(v) + model(v.flip(3)))  # noqa: E731
    p = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    want = 0.5 * pair(x) + 0.25 * (pair(p[:, :, :-2, :-2]) + pair(p[:, :, 2:, 2:]))
    y = want.argmax(1)
    data2 = data.__class__(data.x_train, data.y_train, data.x_test, y, data.mean, data.std,
                           ("a", "b"))
    acc, loss, _ = evaluate(model, data2, CPU32, tta="flip_translate")
    assert acc == 1.0
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(want, y)), rel=1e-5)


def test_whitening_bias_freezes_after_its_epochs() -> None:
    c = cfg("cnn", epochs=4)
    c = c.model_copy(update={"arch": c.arch.model_copy(update={"whiten_bias_epochs": 1.0})})
    data = tiny_data()
    torch.manual_seed(0)
    model = build_model(c, num_classes=3, image_size=16)
    run = Trainer(model, model, data, c, CPU32, seed=0)
    (group,) = [g for g in run.opt.param_groups if "until_step" in g]
    assert group["params"] == [model.whiten.bias] and group["until_step"] == run.steps_per_epoch
    order = run.epoch_order()
    seen = []
    for step in range(run.steps_per_epoch + 2):
        x, t = run.draw(order, step % run.steps_per_epoch, 0, step)
        run.forward_backward(x, t)
        before = model.whiten.bias.detach().clone()
        run.optimizer_step(step)
        seen.append(not torch.equal(before, model.whiten.bias))
    # step 0 has lr 0 (start_lr_frac 0); then the bias moves until its epoch is over
    assert all(seen[1:run.steps_per_epoch]) and not any(seen[run.steps_per_epoch:])


def test_late_frozen_group_keeps_its_decay_and_lr_scale() -> None:
    c = cfg("cnn")
    model = build_model(c, num_classes=3, image_size=16)
    opt = make_optimizer(model, c.train, torch.device("cpu"), [(model.whiten.bias, 7)])
    (g,) = [g for g in opt.param_groups if "until_step" in g]
    assert g["weight_decay"] == c.train.weight_decay and g["lr_scale"] == 1.0
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(
        1 for p in model.parameters() if p.requires_grad)


def test_fp32_means_fp32() -> None:
    with tf32(True):
        assert tf32_enabled()
        resolve_runtime("cpu", "fp32", None, log=DEVNULL)
        assert not tf32_enabled()  # resolving a runtime turns TF32 off
    assert not tf32_enabled()


def test_breakdown_pass_restores_the_model() -> None:
    c = cfg("cnn", epochs=1)
    torch.manual_seed(0)
    model = build_model(c, num_classes=3, image_size=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    parts = step_breakdown_ms(model, tiny_data(), c, CPU32, steps=2)
    assert set(parts) == {"data", "forward", "backward", "optimizer"}
    assert all(v > 0 for v in parts.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_mix_off_epochs_leaves_the_last_batches_unmixed() -> None:
    c = cfg("vit", epochs=4)
    c = c.model_copy(update={"augment": c.augment.model_copy(
        update={"mix_prob": 1.0, "mix_off_epochs": 1.0, "erasing_prob": 0.0, "translate": 0,
                "flip": "none"})})
    data = tiny_data()
    torch.manual_seed(0)
    model = build_model(c, num_classes=3, image_size=16)
    run = Trainer(model, model, data, c, CPU32, seed=0)
    order = run.epoch_order()
    last = run.total_steps - 1
    _, t_last = run.draw(order, 0, 3, last)
    _, t_first = run.draw(order, 0, 0, 0)
    smooth = c.train.label_smoothing / 3
    assert torch.allclose(t_last.max(1).values, torch.full((32,), 1 - 2 * smooth))  # one-hot
    assert not torch.allclose(t_first.max(1).values, torch.full((32,), 1 - 2 * smooth))


def test_models_train_from_the_gpu_params_yaml() -> None:
    """The committed GPU recipes validate and build (their keys exist and fit the code)."""
    import yaml
    root = Path(__file__).resolve().parents[1]
    params = parse_params(yaml.safe_load((root / "params.yaml").read_text()))
    for name in ("cnn", "vit"):
        m = params.model(name)
        assert m.train.compile and m.train.warmup_steps > 0
        build_model(m, num_classes=10, image_size=32)
    assert params.models["vit"].augment.policy == "trivial"


def test_yaml_1_2_floats_without_a_dot_are_numbers(tmp_path: Path) -> None:
    """``bn_eps: 1e-12`` is a float for DVC (YAML 1.2); the params loader agrees."""
    from cifarbench.config import load_params
    root = Path(__file__).resolve().parents[1]
    text = (root / "params.yaml").read_text().replace("bn_eps: 1.0e-12", "bn_eps: 1e-12")
    assert "bn_eps: 1e-12" in text
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").models["cnn"].arch.bn_eps == 1e-12
