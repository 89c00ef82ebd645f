"""torch.compile'd training steps compute what eager ones do (issue 14), and a compiled step
that does not is never used silently."""

import io
import math

import pytest
import torch
import torch.nn.functional as F
from test_train import cfg, tiny_data

from cifarbench.models import build_model
from cifarbench.runtime import Runtime, cpu_has_native_bf16
from cifarbench.train import Trainer, compile_checked

# Relative L2 distance of the concatenated gradients, compiled vs eager, from the same state
# and batch. In low precision fused kernels round differently (measured: bf16 on a 2-core
# AMD EPYC, tiny CNN 0.01-0.05, tiny ViT < 0.01); fp32 only reorders sums (tiny CNN: 1.5e-3).
GRAD_TOL = {"fp32": 1e-2, "bf16": 0.1, "fp16": 0.05}
LOSS_TOL = {"fp32": 1e-5, "bf16": 1e-2, "fp16": 5e-3}


def runtimes() -> list[Runtime]:
    """Each low precision the runtime can pick on this machine (fp32 where it has none)."""
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        return [Runtime(dev, torch.bfloat16), Runtime(dev, torch.float16)]
    return [Runtime(torch.device("cpu"), torch.bfloat16 if cpu_has_native_bf16() else None)]


def step(model: torch.nn.Module, fn, x: torch.Tensor, t: torch.Tensor,
         rt: Runtime) -> tuple[float, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    with rt.autocast():
        loss = F.cross_entropy(fn(x).float(), t)
    loss.backward()
    return float(loss.detach()), torch.cat([p.grad.flatten().float() for p in model.parameters()
                                   if p.grad is not None])


@pytest.mark.parametrize("rt", runtimes(), ids=lambda r: f"{r.device.type}-{r.dtype_name}")
@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_compiled_step_matches_eager(kind: str, rt: Runtime) -> None:
    torch._dynamo.reset()
    c = cfg(kind)
    data = tiny_data(device=rt.device)
    torch.manual_seed(0)
    model = build_model(c, num_classes=3, image_size=16).to(rt.device)
    run = Trainer(model, model, data, c, rt, seed=0)  # whitening init, batch drawing
    x, t = run.draw(run.epoch_order(), 0, 0, 0)
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    eager_loss, eager_grads = step(model, model, x, t, rt)
    model.load_state_dict(state)  # BatchNorm running stats moved
    loss, grads = step(model, torch.compile(model), x, t, rt)
    assert math.isfinite(loss) and bool(grads.isfinite().all()), "compiled step is not finite"
    assert abs(loss - eager_loss) <= LOSS_TOL[rt.dtype_name] * abs(eager_loss)
    rel = float((grads - eager_grads).norm() / eager_grads.norm())
    assert rel <= GRAD_TOL[rt.dtype_name], f"gradients differ by {rel:.3g} (relative L2)"


def test_non_finite_compiled_step_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    c = cfg("cnn", compile=True)
    torch.manual_seed(0)
    model = build_model(c, num_classes=3, image_size=16)
    monkeypatch.setattr(torch, "compile", lambda m: (lambda x: m(x) * float("nan")))
    log = io.StringIO()
    fn, info = compile_checked(model, tiny_data(), c, Runtime(torch.device("cpu"), None), log=log)
    assert fn is model and info.mode == "fallback" and "non-finite" in info.reason
    assert "torch.compile not used" in log.getvalue()


def test_failing_compile_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(m):
        def fn(x):
            raise RuntimeError("inductor exploded\nsecond line")
        return fn

    c = cfg("vit", compile=True)
    model = build_model(c, num_classes=3, image_size=16)
    monkeypatch.setattr(torch, "compile", broken)
    log = io.StringIO()
    fn, info = compile_checked(model, tiny_data(), c, Runtime(torch.device("cpu"), None), log=log)
    assert fn is model and info.mode == "fallback"
    assert info.reason == "compile failed: RuntimeError: inductor exploded"


def test_compile_off_is_eager() -> None:
    c = cfg("cnn")
    model = build_model(c, num_classes=3, image_size=16)
    fn, info = compile_checked(model, tiny_data(), c, Runtime(torch.device("cpu"), None))
    assert fn is model and info.mode == "eager" and info.compile_time_s == 0.0


def test_compiled_training_runs_reuse_one_graph() -> None:
    """compile: true through train_runs: one compile for all seeds (no recompiles), recorded."""
    from cifarbench.train import train_runs
    torch._dynamo.reset()
    c = cfg("cnn", compile=True, runs=2, epochs=1, warmup_steps=2)
    training = train_runs(lambda: build_model(c, num_classes=3, image_size=16), tiny_data(), c,
                          Runtime(torch.device("cpu"), None), seed=0, name="cnn", log=io.StringIO())
    assert training.compile.mode == "compiled" and training.compile.compile_time_s > 0
    assert training.compile.recompiles == 0
    assert [r.seed for r in training.runs] == [0, 1]
    assert all(r.test_accuracy > 0.5 for r in training.runs)


def test_each_precision_compiles_into_its_own_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """inductor's cache keys miss the autocast dtype (torch 2.11): precisions must not share."""
    import os
    c = cfg("vit", compile=True)
    model = build_model(c, num_classes=3, image_size=16)
    monkeypatch.setattr(torch, "compile", lambda m: m)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/whatever")  # restored afterwards
    folders = []
    for amp in (None, torch.bfloat16):
        compile_checked(model, tiny_data(), c, Runtime(torch.device("cpu"), amp), log=io.StringIO())
        folders.append(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    assert folders[0].endswith("cifarbench-cpu-fp32") and folders[1].endswith("cifarbench-cpu-bf16")
