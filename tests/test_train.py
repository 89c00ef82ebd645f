"""The training loop on tiny data: schedules, loss decrease, determinism, divergence, metrics."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from project_params import params_with

from cifarbench import results
from cifarbench.errors import UserError
from cifarbench.models import build_model
from cifarbench.runtime import Runtime
from cifarbench.train import evaluate, lr_at, to_device_data, train_run, train_runs

CPU32 = Runtime(device=torch.device("cpu"), amp_dtype=None)
CPU_BF16 = Runtime(device=torch.device("cpu"), amp_dtype=torch.bfloat16)

# Overrides of params.yaml's recipes: tiny models, four epochs, one seed, eager, no warm-up;
# the recipes' lookahead, lr floors, stochastic depth, mixing-off epochs and TrivialAugment are
# off (a test that is about one of them turns it on).
MODELS = {
    "cnn": {"kind": "cnn", "arch": {"widths": [8, 16, 16]},
            "train": {"epochs": 4, "batch_size": 32, "optimizer": "sgd", "lr": 0.2,
                      "label_smoothing": 0.1, "schedule": "triangle", "warmup_frac": 0.2,
                      "bias_lr_scale": 4.0, "tta": "flip_translate", "target_accuracy": 0.5,
                      "momentum": 0.9, "weight_decay": 0.0, "start_lr_frac": 0.0,
                      "final_lr_frac": 0.0, "lookahead": False, "runs": 1, "compile": False,
                      "warmup_steps": 0}},
    "vit": {"kind": "vit", "arch": {"patch_size": 4, "dim": 32, "depth": 2, "heads": 2,
                                    "drop_path": 0.0},
            "train": {"epochs": 4, "batch_size": 32, "optimizer": "adamw", "lr": 3e-3,
                      "weight_decay": 0.05, "warmup_frac": 0.1, "grad_clip": 1.0,
                      "tta": "flip", "target_accuracy": 0.5,
                      "beta2": 0.999, "label_smoothing": 0.0, "eval_every": 1, "runs": 1,
                      "compile": False, "warmup_steps": 0},
            "augment": {"flip": "random", "translate": 2, "mixup_alpha": 0.2,
                        "cutmix_alpha": 1.0, "mix_prob": 0.5, "erasing_prob": 0.25,
                        "mix_off_epochs": 0, "policy": "none"}},
}


def tiny_data(n_train: int = 192, n_test: int = 60, k: int = 3, size: int = 16,
              device: torch.device | None = None):
    """Classes differ by their dominant colour channel: learnable in a few steps."""
    rng = np.random.default_rng(0)

    def split(n):
        y = np.arange(n) % k
        x = rng.integers(0, 80, (n, size, size, 3), dtype=np.uint8)
        x[np.arange(n), :, :, y] += 150
        return x, y.astype(np.int64)

    return to_device_data(split(n_train), split(n_test), classes=["r", "g", "b"],
                          mean=[0.45] * 3, std=[0.25] * 3, device=device or torch.device("cpu"))


def cfg(kind: str, **train):
    model = {**MODELS[kind], "train": {**MODELS[kind]["train"], **train}}
    return params_with({"models": {kind: model}}).model(kind)


def run(kind: str, rt: Runtime = CPU32, seed: int = 0, **train):
    c = cfg(kind, **train)
    data = tiny_data()
    torch.manual_seed(seed)
    model = build_model(c, num_classes=3, image_size=16)
    return train_run(model, data, c, rt, seed=seed, name=kind)


def test_lr_schedules() -> None:
    c = cfg("cnn", start_lr_frac=0.2, final_lr_frac=0.07, warmup_frac=0.25).train
    assert lr_at(0, 100, c) == pytest.approx(0.2)
    assert lr_at(25, 100, c) == pytest.approx(1.0)
    assert lr_at(100, 100, c) == pytest.approx(0.07)
    assert lr_at(62, 100, c) == pytest.approx(1.0 + (0.07 - 1.0) * 37 / 75)
    cos = cfg("vit", warmup_frac=0.1, final_lr_frac=0.0).train
    assert lr_at(10, 100, cos) == pytest.approx(1.0)
    assert lr_at(55, 100, cos) == pytest.approx(0.5)
    assert lr_at(100, 100, cos) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(5, 100, cos) == pytest.approx(0.5)


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_recipe_learns_tiny_data(kind: str) -> None:
    r = run(kind)
    losses = [c["train_loss"] for c in r.curves]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert r.test_accuracy > 0.8  # chance is 1/3
    assert r.predictions.shape == (60,)
    assert r.train_time_s > 0 and r.time_to_target_s is not None
    assert r.peak_memory_kind == "host_peak_rss" and r.peak_memory_mb > 0


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_same_seed_same_result_on_cpu(kind: str) -> None:
    a, b = run(kind, epochs=2), run(kind, epochs=2)
    assert a.test_accuracy == b.test_accuracy
    assert [c["train_loss"] for c in a.curves] == [c["train_loss"] for c in b.curves]
    c = run(kind, epochs=2, seed=1)
    assert [x["train_loss"] for x in c.curves] != [x["train_loss"] for x in a.curves]


def test_bf16_autocast_trains_on_cpu() -> None:
    r = run("vit", rt=CPU_BF16)
    assert r.test_accuracy > 0.8 and all(math.isfinite(c["train_loss"]) for c in r.curves)


def test_divergence_names_model_and_lr() -> None:
    with pytest.raises(UserError, match=r"models\.vit.*diverged.*models\.vit\.train\.lr = 1e\+30"):
        run("vit", lr=1e30, grad_clip=0.0, warmup_frac=0.0)


def test_ema_weights_are_shipped() -> None:
    """With weight averaging, the model left behind holds the averaged weights that were
    evaluated: re-evaluating it reproduces the reported accuracy."""
    c = cfg("cnn", ema_decay=0.8, tta="flip")
    data = tiny_data()
    torch.manual_seed(0)
    model = build_model(c, num_classes=3, image_size=16)
    r = train_run(model, data, c, CPU32, seed=0, name="cnn")
    acc, loss, _ = evaluate(model, data, CPU32, tta="flip")
    assert acc == r.test_accuracy and loss == pytest.approx(r.test_loss)


def test_lookahead_ends_at_the_average() -> None:
    from cifarbench.train import Lookahead
    model = torch.nn.Linear(2, 1)
    la = Lookahead(model, total_steps=10, every=1)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    la.step(10)  # decay 0.95 at the end of training: mostly the old average
    assert torch.allclose(model.weight, start + 0.05, atol=1e-6)
    la.finish()
    assert torch.allclose(model.weight, start + 0.05, atol=1e-6)
    assert run("cnn", lookahead=True).test_accuracy > 0.8


def test_runs_summary_and_tables() -> None:
    c = cfg("cnn", epochs=1, runs=2)
    data = tiny_data()
    training = train_runs(lambda: build_model(c, num_classes=3, image_size=16), data, c, CPU32,
                          seed=5, name="cnn")
    runs, state = training.runs, training.weights
    assert [r.seed for r in runs] == [5, 6]
    assert all(v.device.type == "cpu" for v in state.values())
    env = {"device": "cpu", "device_name": "Test CPU", "dtype": "fp32", "torch_version": "2",
           "cuda_version": None, "tf32": False, "cpu_threads": 2, "cpu_count": 2,
           "python_version": "3.11", "threads": 2, "host_load_1m": None, "oversubscribed": False}
    step = {"data": 1.0, "forward": 2.0, "backward": 3.0, "optimizer": 0.5}
    headline, m = results.summarize_runs("cnn", "cnn", c.train, training, n_params=123,
                                         breakdown_ms=step, env=env)
    assert m.compile_mode == "eager" and m.breakdown_ms.model_dump() == step
    accs = [r.test_accuracy for r in runs]
    assert headline.test_accuracy == pytest.approx(sum(accs) / 2)
    assert headline.test_accuracy_std == pytest.approx(float(np.std(accs, ddof=1)))
    assert m.per_run[1].seed == 6 and m.runs == 2 and m.params == 123
    curves = results.mean_curves(runs)
    assert curves[0].train_loss == pytest.approx(sum(r.curves[0]["train_loss"] for r in runs) / 2)
    assert [c.run for c in results.run_curves(runs)] == [0, 1]
    rows = results.confusion_rows(runs[0].predictions, data.y_test, data.classes)
    assert len(rows) == 60 and set(rows[0]) == {"actual", "predicted"}
    assert sum(r["actual"] == r["predicted"] for r in rows) / 60 == pytest.approx(runs[0].test_accuracy)


class Recorder:
    def __init__(self) -> None:
        self.records: list = []

    def epoch_end(self, record) -> None:
        self.records.append(record)


@pytest.mark.parametrize("budget, passes, evaluations", [("epochs", 2, 2), ("steps", 8, 2)])
def test_budget_rule_sets_steps_passes_and_evaluations(budget, passes, evaluations):
    """192 images of a 768-image split, batch 32: 6 steps a pass. `epochs` trains 2 passes;
    `steps` trains the 2 x 24 steps of the whole split (8 passes), still evaluating per epoch."""
    c = cfg("cnn", epochs=2, budget=budget, eval_every=1)
    data = dataclasses.replace(tiny_data(), source_train_images=768)
    seen = Recorder()
    torch.manual_seed(0)
    r = train_run(build_model(c, num_classes=3, image_size=16), data, c, CPU32, seed=0,
                  name="cnn", progress=seen)
    assert len(seen.records) == passes
    assert r.train_throughput_img_s > 0
    assert [p["epoch"] for p in r.curves] == [1.0, 2.0][:evaluations]
    assert sum(rec.test_accuracy is not None for rec in seen.records) == evaluations
    assert seen.records[-1].epoch == 2.0  # epochs of the budget, whatever the rule
