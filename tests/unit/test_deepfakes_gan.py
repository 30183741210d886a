"""Conditional GAN: networks, Lightning training (plain and DP), sampling, checkpoints,
the DeepFake dataset, and the errors for bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsec.config import load_config
from medsec.deepfakes.dataset import load_fake_dataset, write_fake_dataset
from medsec.deepfakes.gan import GanModule, gan_arch, private_discriminator, train_gan
from medsec.deepfakes.networks import (
    ConditionalDiscriminator,
    ConditionalGenerator,
    ConditionedImages,
    GanArch,
    load_generator,
    save_generator,
)
from medsec.deepfakes.sampling import sample_images, sample_per_class
from medsec.errors import ConfigError, DataError
from medsec.io import file_digest
from medsec.models.factory import build_classifier
from medsec.privacy.accounting import epsilon_for
from medsec.privacy.config import DPConfig
from medsec.privacy.dp import check_dp_compatible
from medsec.training.checkpoint import save_classifier
from tests.unit.deepfake_fixtures import TINY_ARCH, TINY_GAN, blob_dataset, single_thread  # noqa: F401


def test_networks_shapes_range_and_dp_compatibility():
    gen, disc = ConditionalGenerator(TINY_ARCH), ConditionalDiscriminator(TINY_ARCH)
    labels = torch.tensor([0, 1, 1, 0])
    images = gen(torch.randn(4, 8), labels)
    assert images.shape == (4, 1, 16, 16)
    assert images.min() >= 0 and images.max() <= 1
    assert disc(images, labels).shape == (4,)
    check_dp_compatible(disc.net)  # GroupNorm, non-inplace activations
    with pytest.raises(ValueError, match="labels must lie in"):
        gen(torch.randn(1, 8), torch.tensor([2]))


def test_sampling_is_seeded_and_class_balanced():
    gen = ConditionalGenerator(TINY_ARCH)
    torch.manual_seed(123)
    a, labels = sample_per_class(gen, 3, seed=7)
    torch.manual_seed(456)  # the global RNG does not matter
    b, _ = sample_per_class(gen, 3, seed=7)
    c, _ = sample_per_class(gen, 3, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert gen.training  # mode restored


def test_training_runs_in_lightning_and_is_reproducible():
    data = blob_dataset(32)
    first = train_gan(data, 2, TINY_GAN)
    second = train_gan(data, 2, TINY_GAN)
    assert len(first.history) == 1 and np.isfinite(first.history[0]["d_loss"])
    assert first.epsilon is None
    for (k, v), w in zip(first.generator.state_dict().items(),
                         second.generator.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def test_dp_discriminator_is_accounted_per_discriminator_step():
    data = blob_dataset(32)  # batch 16: 2 Poisson batches per epoch, sample rate 1/2
    settings = DPConfig(enabled=True, noise_multiplier=1.0, accountant="rdp", delta=1e-3)
    gan = train_gan(data, 2, TINY_GAN, dp=settings, epochs=2)
    assert gan.epsilon == pytest.approx(epsilon_for(1.0, 0.5, 4, 1e-3, "rdp"), rel=1e-6)
    assert gan.delta == 1e-3 and gan.dp_params["dp_noise_multiplier"] == 1.0
    images = sample_images(gan.generator, torch.tensor([0, 1]), seed=0)
    assert torch.isfinite(images).all()


def _clipped_sum(module: GanModule, optimizer, real: torch.Tensor) -> torch.Tensor:
    """The summed per-row clipped gradient (before noise) of one DP discriminator step on
    ``real``, with the fakes drawn from a fixed seed."""
    torch.manual_seed(5)
    optimizer.zero_grad(set_to_none=True)
    module.discriminator_batch(real)[0].backward()
    optimizer.clip_and_accumulate()
    return torch.cat([p.summed_grad.flatten() for p in module.discriminator.parameters()])


def test_dp_discriminator_sensitivity_to_one_record_is_the_clipping_bound():
    # Add-remove neighbours D and D minus one image: the clipped gradient sum the DP optimizer
    # noises must move by at most max_grad_norm (what the accountant assumes), whatever the
    # batch size, for every removed image.
    data, clip = blob_dataset(12), 0.05
    module = GanModule(gan_arch(TINY_GAN, (1, 16, 16), 2), TINY_GAN)
    loader = torch.utils.data.DataLoader(ConditionedImages(data, 2), batch_size=6)
    settings = DPConfig(enabled=True, noise_multiplier=1.0, max_grad_norm=clip, delta=1e-3)
    with private_discriminator(module, loader, settings, 1) as (_, state):
        real = torch.stack([ConditionedImages(data, 2)[i][0] for i in range(len(data))])
        full = _clipped_sum(module, state.optimizer, real)
        shifts = [float((full - _clipped_sum(module, state.optimizer,
                                             torch.cat([real[:i], real[i + 1:]]))).norm())
                  for i in range(len(data))]
    assert max(shifts) <= clip * (1 + 1e-4)
    assert max(shifts) > 0.5 * clip  # rows are clipped: one record moves the sum by ~C


def test_checkpoint_roundtrip_and_mismatched_data_are_rejected(tmp_path):
    gen = ConditionalGenerator(TINY_ARCH)
    path = save_generator(tmp_path / "g.pt", gen, {"dataset": "phantoms", "data_version": "v1"})
    loaded, meta = load_generator(path, dataset="phantoms", image_shape=(1, 16, 16),
                                  num_classes=2)
    assert meta["data_version"] == "v1"
    other = save_generator(tmp_path / "other-name.pt", gen, {"dataset": "phantoms",
                                                             "data_version": "v1"})
    # the bytes do not depend on the file name
    assert file_digest(other, "sha256") == file_digest(path, "sha256")
    assert torch.equal(sample_images(gen, torch.tensor([1]), 0),
                       sample_images(loaded, torch.tensor([1]), 0))
    with pytest.raises(DataError, match="trained on dataset 'phantoms', not 'pneumoniamnist'"):
        load_generator(path, dataset="pneumoniamnist")
    with pytest.raises(DataError, match=r"shape \(1, 16, 16\).*\(1, 28, 28\)"):
        load_generator(path, image_shape=(1, 28, 28))
    with pytest.raises(DataError, match="3 were requested"):
        load_generator(path, num_classes=3)
    clf = build_classifier("small_cnn", 1, 2, (28, 28))
    meta = {"model_name": "small_cnn", "in_channels": 1, "num_classes": 2,
            "image_size": [28, 28], "norm": "batch", "dropout": 0.0}
    save_classifier(tmp_path / "c.pt", clf, meta)
    with pytest.raises(DataError, match="not a MedSec generator"):
        load_generator(tmp_path / "c.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a readable"):
        load_generator(tmp_path / "junk.pt")


def test_fake_dataset_is_deterministic_with_metadata(tmp_path):
    gen = ConditionalGenerator(TINY_ARCH)
    ckpt = save_generator(tmp_path / "g.pt", gen, {"dataset": "phantoms"})
    npz, meta_path = write_fake_dataset(tmp_path / "a", gen, ckpt, {"dataset": "phantoms"}, 8, 3)
    again, _ = write_fake_dataset(tmp_path / "b", gen, ckpt, {"dataset": "phantoms"}, 8, 3)
    assert file_digest(npz) == file_digest(again)
    meta = __import__("json").loads(meta_path.read_text())
    assert meta["checkpoint_sha256"] == file_digest(ckpt, "sha256") and meta["sample_seed"] == 3
    assert meta["n_images"] == {"train": 16, "val": 4, "test": 4} and meta["synthetic"]
    splits = load_fake_dataset(npz, ["a", "b"])
    assert splits["train"].images.shape == (16, 1, 16, 16)
    assert np.bincount(splits["train"].labels).tolist() == [8, 8]


def test_bad_gan_configs_are_clear_errors():
    with pytest.raises(ConfigError, match="kernel_size must be odd"):
        load_config(overrides=["deepfake.gan.kernel_size=4"])
    with pytest.raises(ConfigError, match="multiples of 8"):
        load_config(overrides=["deepfake.gan.discriminator_channels=[12]"])
    with pytest.raises(ConfigError, match="epsilons must be > 0"):
        load_config(overrides=["deepfake.dp.epsilons=[0]"])
    arch = GanArch((1, 30, 30), 2, 8, (16, 8), (8, 16))
    with pytest.raises(ConfigError, match="multiple of 4"):
        ConditionalGenerator(arch)
