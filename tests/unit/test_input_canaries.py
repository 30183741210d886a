"""One-run DP auditing with input canaries (Steinke, Nasr, Jagielski 2023, black-box setting):
crafted binary-noise images with random labels, each in the training data with probability
1/2, scored by their loss. Sanity: a non-private tiny model that memorises them gets a clearly
positive lower bound; correct DP-SGD (Opacus, several seeds) never exceeds its epsilon."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from medsec.config import load_config
from medsec.data.types import ImageDataset
from medsec.errors import ConfigError
from medsec.models.config import ModelConfig
from medsec.privacy.canary_audit import InputCanaries, audit_classifier_run
from medsec.privacy.config import DPConfig
from medsec.training.config import ClassifierRecipe, TrainConfig
from tests.unit.federated_fixtures import tiny_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def _recipe(epochs: int = 10) -> ClassifierRecipe:
    return ClassifierRecipe(model=ModelConfig(norm="group"),
                            train=TrainConfig(batch_size=32, lr=3e-3, epochs=epochs,
                                              optimizer="adam", select_best=False,
                                              num_threads=1))


@pytest.fixture(scope="module")
def data():
    return tiny_dataset(128, 32)


def test_input_canaries_are_drawn_inserted_and_scored_by_their_loss():
    c = InputCanaries.draw(200, (1, 16, 16), 3, seed=5)
    assert c.images.shape == (200, 1, 16, 16) and set(np.unique(c.images)) == {0.0, 1.0}
    assert set(np.unique(c.labels)) == {0, 1, 2} and 70 < c.included.sum() < 130
    again = InputCanaries.draw(200, (1, 16, 16), 3, seed=5)
    assert np.array_equal(again.images, c.images) and np.array_equal(again.included, c.included)
    train = ImageDataset(np.zeros((10, 1, 16, 16), np.float32), np.zeros(10, np.int64))
    merged = c.insert(train)
    assert len(merged) == 10 + c.included.sum()
    assert np.array_equal(merged.images[10:], c.images[c.included])
    assert np.array_equal(merged.labels[10:], c.labels[c.included])
    with pytest.raises(ValueError, match="single-label"):
        c.insert(ImageDataset(train.images, np.zeros((10, 3), np.float32)))
    # score = -cross-entropy (oracle: log-softmax of the label by hand)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 3))
    logits = net(torch.from_numpy(c.images)).detach().double()
    expected = (logits - torch.logsumexp(logits, dim=1, keepdim=True))[
        torch.arange(200), torch.from_numpy(c.labels)].numpy()
    np.testing.assert_allclose(c.scores(net), expected, rtol=1e-5, atol=1e-6)


def test_non_private_run_with_input_canaries_gets_a_clearly_positive_bound(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audit = audit_classifier_run(_recipe(), data, None, 100, seed=0, kind="input")
    assert audit.kind == "input" and math.isinf(audit.epsilon)
    assert audit.inserted == audit.num_included == int(audit.included.sum())
    # the memorised canaries have a far lower loss than the unseen ones
    assert audit.scores[audit.included].mean() > audit.scores[~audit.included].mean() + 1.0
    # 25 + 25 guesses at 1 - 0.05/3: a perfect score proves ~1.9; measured 49/50 -> 1.80
    assert audit.epsilon_audit_lower > 1.2
    assert audit.to_dict()["kind"] == "input"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dp_sgd_with_input_canaries_never_exceeds_the_claimed_epsilon(data, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audit = audit_classifier_run(_recipe(), data, DPConfig(
            enabled=True, target_epsilon=2.0, accountant="rdp"), 100, seed=seed, kind="input")
    assert 1.5 < audit.epsilon <= 2.0
    # the accountant counts the canaries: N = 128 images + the included canaries
    assert audit.delta == pytest.approx(1 / (10 * (128 + audit.num_included)))
    assert 0.0 <= audit.epsilon_audit_lower <= audit.epsilon


def test_stages_take_the_canary_kind(data):
    from medsec.stages.privacy import canary_audit

    cfg = load_config(preset="tiny", overrides=[
        "privacy.canary.enabled=true", "privacy.canary.kind=input",
        "privacy.canary.num_canaries=40", "privacy.canary.guesses=[0.25]", "train.epochs=1",
        "model.norm=group", "train.num_threads=1"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audit = canary_audit(cfg, data)
    assert audit is not None and audit.kind == "input" and audit.num_canaries == 40
    assert load_config(preset="tiny").privacy.canary.kind == "gradient"
    with pytest.raises(ConfigError, match="deepfake.canary"):
        load_config(preset="tiny", overrides=["deepfake.canary.kind=input"])


def test_federated_client_dp_audit_with_input_canaries():
    from medsec.federated.canary import audit_client_dp
    from medsec.federated.config import ClientDPConfig
    from medsec.federated.local import LocalTraining
    from medsec.models.factory import build_classifier

    data = tiny_dataset(128, 32)
    net = build_classifier("small_cnn", 1, 2, (16, 16), norm="group")
    spec = LocalTraining(epochs=2, batch_size=32, lr=1e-2, optimizer="sgd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audit = audit_client_dp(net, data.splits["train"], data.splits["val"], 2, spec,
                                ClientDPConfig(enabled=True, target_epsilon=2.0), 60,
                                kind="input")
    assert audit.kind == "input" and audit.delta == pytest.approx(
        1 / (10 * (128 + audit.num_included)))
    assert 0.0 <= audit.epsilon_audit_lower <= audit.epsilon <= 2.0
