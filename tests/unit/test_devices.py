"""Devices: ``train.accelerator`` / ``devices`` / ``precision`` / ``strategy`` on a CPU machine.

``auto`` resolves to the CPU here; a requested GPU is one ConfigError naming
``train.accelerator`` (never a silent CPU run); bf16-mixed really autocasts on the CPU and its
checkpoint loads; attacks give the same result as a hand-written reference whatever device the
wrapper moves tensors to.
"""

from __future__ import annotations

import pytest
import torch

from medsec.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")
NO_GPU = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present: auto resolves to it")
def test_auto_resolves_to_cpu_without_gpu():
    from medsec.training.config import Hardware
    from medsec.training.devices import resolve_accelerator, torch_device
    from medsec.training.fit import trainer_hardware

    assert resolve_accelerator("auto") == "cpu"
    assert torch_device("auto") == torch.device("cpu")
    kwargs = trainer_hardware(Hardware())
    assert kwargs["accelerator"] == "cpu" and kwargs["devices"] == 1
    assert kwargs["precision"] == "32" and kwargs["deterministic"] is True


@pytest.mark.skipif(not NO_GPU, reason="needs a machine without a GPU")
def test_gpu_requested_without_gpu_is_one_clear_config_error():
    from medsec.config import load_config
    from medsec.training.devices import resolve_accelerator

    with pytest.raises(ConfigError) as info:
        load_config(None, "default", ["train.accelerator=gpu"])
    message = " ".join(str(info.value).split())
    assert "train.accelerator" in message and "gpu requested" in message
    assert "0 CUDA GPU" in message
    with pytest.raises(ConfigError, match="train.accelerator"):  # API path, same error
        resolve_accelerator("gpu")


def test_hardware_config_errors_name_the_key():
    from medsec.config import load_config
    from medsec.training.config import Hardware, use_hardware
    from medsec.training.fit import trainer_hardware

    cfg = load_config(None, "default", ["train.precision=32"])  # YAML int 32 -> "32"
    assert cfg.train.precision == "32" and cfg.train.accelerator == "auto"
    with pytest.raises(ConfigError, match="train.devices"):
        load_config(None, "default", ["train.devices=2"])  # needs strategy ddp
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(None, "default", ["train.precision=16"])
    with pytest.raises(ConfigError, match="train.precision: 16-mixed"):
        trainer_hardware(Hardware(accelerator="cpu", precision="16-mixed"))
    # the pipeline stages train in one process: DDP is for scripts
    with pytest.raises(ConfigError, match="train.devices"):
        use_hardware(Hardware(accelerator="cpu", devices=2, strategy="ddp"))


@pytest.fixture(scope="module")
def phantoms(phantom_dir):
    from medsec.data.phantoms import PHANTOM_FILE, load_phantoms

    return load_phantoms(phantom_dir / PHANTOM_FILE)


def test_bf16_mixed_on_cpu_trains_in_bfloat16_and_checkpoint_loads(phantoms, tmp_path):
    from medsec.training.checkpoint import load_classifier, save_classifier
    from medsec.training.config import ClassifierRecipe, TrainConfig
    from medsec.training.job import build_module, evaluate_classifier, train_classifier

    recipe = ClassifierRecipe(train=TrainConfig(epochs=2, batch_size=32, precision="bf16-mixed",
                                                accelerator="cpu"))
    module = build_module(recipe, phantoms)
    seen: list[torch.dtype] = []
    last = [m for m in module.net.modules() if isinstance(m, torch.nn.Linear)][-1]
    hook = last.register_forward_hook(
        lambda mod, inp, out: seen.append(out.dtype) if mod.training else None)
    trained = train_classifier(recipe, phantoms, module=module)
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}  # autocast really ran in bfloat16
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in trained.fit.history)
    assert trained.meta["device"] == "cpu" and trained.meta["precision"] == "bf16-mixed"
    # weights stay float32; the checkpoint loads and predicts exactly as the trained model
    assert all(p.dtype == torch.float32 for p in trained.model.parameters())
    path = save_classifier(tmp_path / "bf16.pt", trained.model, trained.meta)
    loaded, meta = load_classifier(path)
    assert meta["precision"] == "bf16-mixed"
    split = phantoms.splits["test"]
    a = evaluate_classifier(trained.model, split, phantoms.num_classes)
    b = evaluate_classifier(loaded, split, phantoms.num_classes)
    assert torch.equal(a.logits, b.logits)
    assert next(loaded.parameters()).device == torch.device("cpu")


def test_attack_is_device_neutral_and_matches_reference_fgsm():
    """The attack moves inputs to the model's device and back: on the CPU the result is
    bit-identical to a hand-written FGSM, returned on the caller's device and dtype."""
    import torch.nn.functional as F

    from medsec.attacks.fgsm import FGSM
    from medsec.models.factory import build_classifier
    from medsec.training.devices import model_device, on_model_device

    torch.manual_seed(0)
    model = build_classifier("small_cnn", 1, 2, (16, 16), norm="group").eval()
    x = torch.rand(8, 1, 16, 16)
    y = torch.randint(0, 2, (8,))
    eps = 4 / 255
    adv = FGSM(model, eps=eps, norm="linf")(x, y)
    ref = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(ref), y, reduction="sum"), ref)
    expected = (x + eps * grad.sign()).clamp(0, 1)
    assert adv.device == x.device and adv.dtype == x.dtype
    assert torch.allclose(adv, expected, atol=1e-7)
    assert model_device(model) == torch.device("cpu")
    moved, = on_model_device(model, x)
    assert moved.data_ptr() == x.data_ptr()  # already there: no copy


def test_predict_logits_returns_on_caller_device():
    from medsec.models.factory import build_classifier
    from medsec.training.predict import predict_logits

    torch.manual_seed(0)
    model = build_classifier("small_cnn", 1, 2, (16, 16), norm="group")
    x = torch.rand(5, 1, 16, 16)
    out = predict_logits(model, x, batch_size=2)
    assert out.shape == (5, 2) and out.device == x.device and out.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(out, model.eval()(x), atol=1e-6)
