"""One-run DP auditing (Steinke, Nasr and Jagielski 2023): the bound against independent
computations, its validity by simulation, and gradient canaries in real DP-SGD runs (the
classifier's training path and the DP-GAN's discriminator)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from medsec.models.config import ModelConfig
from medsec.privacy.canary_audit import (
    audit_classifier_run,
    audit_scores,
    count_correct,
    epsilon_lower_bound,
    p_value_dp_audit,
)
from medsec.privacy.config import DPConfig
from medsec.training.config import ClassifierRecipe, TrainConfig
from tests.unit.federated_fixtures import tiny_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- the bound


def _paper_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """The paper's reference loop (Steinke et al. 2023, Algorithm 2), transcribed literally."""
    q = 1 / (1 + math.exp(-eps))
    beta = stats.binom.sf(v - 1, r, q)
    alpha, total = 0.0, 0.0
    for i in range(1, v + 1):
        total += stats.binom.pmf(v - i, r, q)
        if total > i * alpha:
            alpha = total / i
    return min(beta + alpha * delta * 2 * m, 1.0)


@pytest.mark.parametrize(("m", "r", "v", "eps", "delta"), [
    (1000, 100, 90, 1.0, 1e-5), (1000, 200, 150, 0.5, 1e-3), (500, 50, 50, 3.0, 1e-5),
    (100, 100, 60, 0.2, 0.0), (10000, 1000, 700, 0.8, 1e-6),
])
def test_p_value_equals_the_papers_reference_loop(m, r, v, eps, delta):
    assert p_value_dp_audit(m, r, v, eps, delta) == pytest.approx(
        _paper_p_value(m, r, v, eps, delta), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("r", "v"), [(100, 100), (100, 80), (1000, 700), (50, 45), (20, 11)])
def test_delta_zero_bound_is_the_clopper_pearson_logit(r, v):
    """delta = 0: the bound is logit of the one-sided Clopper-Pearson lower limit of v/r."""
    q_low = stats.beta.ppf(0.05, v, r - v + 1)
    expected = max(0.0, math.log(q_low / (1 - q_low)))
    assert epsilon_lower_bound(10 * r, r, v, 0.0, 0.95) == pytest.approx(expected, abs=1e-6)


def test_bound_is_zero_at_chance_and_grows_with_correct_guesses():
    assert epsilon_lower_bound(1000, 100, 50, 1e-5) == 0.0
    bounds = [epsilon_lower_bound(1000, 100, v, 1e-5) for v in (60, 70, 80, 90, 100)]
    assert bounds == sorted(bounds) and bounds[0] > 0
    # delta > 0 can only weaken the bound
    assert epsilon_lower_bound(1000, 100, 90, 1e-2) < epsilon_lower_bound(1000, 100, 90, 0.0)


def test_bound_is_valid_and_nearly_tight_on_randomised_response():
    """Canaries through eps0-randomised response (the worst case for eps0-DP): the 95 % bound
    exceeds eps0 in at most ~5 % of runs, and with many canaries it approaches eps0 (the
    paper's point: one run suffices when m is large)."""
    eps0, m, trials = 1.0, 2000, 200
    rng = np.random.default_rng(0)
    q = math.exp(eps0) / (1 + math.exp(eps0))
    correct = rng.binomial(m, q, size=trials)
    bounds = np.array([epsilon_lower_bound(m, m, int(v), 0.0) for v in correct])
    assert (bounds > eps0).mean() <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)
    assert np.median(bounds) > 0.8 * eps0


def test_guess_counting_and_bonferroni():
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    included = np.array([True, True, False, True, False, False])
    assert count_correct(scores, included, 2, 2) == 4
    assert count_correct(scores, included, 3, 0) == 2
    rng = np.random.default_rng(1)
    inc = rng.random(400) < 0.5
    perfect = audit_scores(inc.astype(float) + 0.01 * rng.random(400), inc, 1e-5,
                           guesses=(0.1,))
    split = audit_scores(inc.astype(float) + 0.01 * rng.random(400), inc, 1e-5,
                         guesses=(0.1, 0.2, 0.3))
    assert perfect.best.correct == perfect.best.guesses == 80
    # one rule at 95 % equals the direct bound; three rules each test at 1 - 0.05/3
    assert perfect.epsilon_audit_lower == pytest.approx(epsilon_lower_bound(400, 80, 80, 1e-5))
    assert split.guesses[0].epsilon_lower < perfect.epsilon_audit_lower
    assert split.epsilon_audit_lower == max(g.epsilon_lower for g in split.guesses)


# --------------------------------------------------------------------------- training runs


def _recipe(epochs: int = 3) -> ClassifierRecipe:
    return ClassifierRecipe(model=ModelConfig(norm="group"),
                            train=TrainConfig(batch_size=32, lr=1e-2, epochs=epochs,
                                              optimizer="sgd", select_best=False,
                                              num_threads=1))


@pytest.fixture(scope="module")
def data():
    return tiny_dataset(256, 64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dp_sgd_audit_never_exceeds_the_claimed_epsilon(data, seed):
    """Correct DP-SGD (Opacus through the project's fit path): lower bound <= epsilon."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audit = audit_classifier_run(_recipe(), data, DPConfig(enabled=True, target_epsilon=2.0,
                                                               accountant="rdp"),
                                     300, seed=seed)
    assert 1.5 < audit.epsilon <= 2.0 and audit.delta == pytest.approx(1 / 2560)
    assert audit.num_canaries == 300 and 100 < audit.num_included < 200
    assert 0.0 <= audit.epsilon_audit_lower <= audit.epsilon
    assert audit.inserted > 300  # ~150 included x 3 epochs x 8 steps x q = 1/8


def test_non_private_run_with_strong_canaries_gets_a_clearly_positive_bound(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audit = audit_classifier_run(_recipe(), data, None, 300, seed=0)
    assert math.isinf(audit.epsilon)
    # 30 + 30 guesses at 1 - 0.05/3: the most a perfect score can prove is ~2.3
    assert audit.epsilon_audit_lower > 1.5
    assert audit.metrics()["epsilon_audit_lower"] > 1.5
    assert math.isnan(audit.metrics()["epsilon"])


def test_dp_gan_discriminator_audit_stays_below_its_epsilon():
    from medsec.deepfakes.canary import audit_gan
    from tests.unit.deepfake_fixtures import TINY_GAN, blob_dataset

    data = blob_dataset(128)
    cfg = TINY_GAN.model_copy(update={"epochs": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        private, gan = audit_gan(data, 2, cfg, DPConfig(enabled=True, target_epsilon=3.0,
                                                         accountant="rdp"), 200)
        plain, _ = audit_gan(data, 2, cfg, None, 200)
    assert gan.epsilon is not None and private.epsilon == pytest.approx(gan.epsilon)
    assert 0.0 <= private.epsilon_audit_lower <= private.epsilon and private.inserted > 100
    # the canaries reach the discriminator: without DP included ones move their coordinate
    # (Adam bounds each step's move, so two epochs give a weak but clear separation)
    gap = plain.scores[plain.included].mean() - plain.scores[~plain.included].mean()
    assert gap > 3 * plain.scores.std() / math.sqrt(plain.num_canaries)


def test_privacy_stage_audits_the_configured_recipe():
    """``privacy.canary`` drives the stage function: None when disabled; with DP enabled the
    accountant's epsilon comes from the same run."""
    from medsec.config import load_config
    from medsec.stages.privacy import canary_audit

    data = tiny_dataset(128, 32)
    assert canary_audit(load_config(preset="tiny"), data) is None
    cfg = load_config(preset="tiny", overrides=[
        "privacy.canary.enabled=true", "privacy.canary.num_canaries=50",
        "privacy.canary.guesses=[0.2]", "model.norm=group", "privacy.dp.enabled=true",
        "privacy.dp.noise_multiplier=1.0", "privacy.dp.accountant=rdp", "train.num_threads=1"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audit = canary_audit(cfg, data)
    assert audit is not None and audit.num_canaries == 50 and audit.guesses[0].guesses == 20
    assert math.isfinite(audit.epsilon) and audit.epsilon_audit_lower <= audit.epsilon


def test_federated_client_dp_audit_stays_below_the_clients_epsilon():
    """The canaries reach a hospital's local DP-SGD (train_locally), and its bound respects
    the client's epsilon for the round."""
    from medsec.federated.canary import audit_client_dp
    from medsec.federated.config import ClientDPConfig
    from medsec.federated.local import LocalTraining
    from medsec.models.factory import build_classifier

    data = tiny_dataset(256, 32)
    net = build_classifier("small_cnn", 1, 2, (16, 16), norm="group")
    spec = LocalTraining(epochs=2, batch_size=32, lr=1e-2, optimizer="sgd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audit = audit_client_dp(net, data.splits["train"], data.splits["val"], 2, spec,
                                ClientDPConfig(enabled=True, target_epsilon=2.0), 200)
    assert 1.0 < audit.epsilon <= 2.0 and audit.delta == pytest.approx(1 / 2560)
    assert 0.0 <= audit.epsilon_audit_lower <= audit.epsilon
    # ~100 included canaries x 2 epochs x 8 steps x q = 1/8: about 200 gradients went in
    assert 100 < audit.inserted < 320
