"""Multi-process training on the CPU: Lightning DDP (gloo) for plain and adversarial training,
and Opacus DPDDP for DP-SGD, each in two real processes.

Lightning's ``ddp`` launcher re-runs the command line for rank 1, so the training runs in a
script (tests/integration/ddp_train_script.py) started under a timeout in its own session;
the whole process group is killed when it hangs (a taken MASTER_PORT hangs gloo for 30 min).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def run_script(args: list[str], timeout: float = 600.0) -> subprocess.CompletedProcess:
    """Run ``python args...`` in a new session; kill its whole process group on timeout."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("MASTER_PORT", None)  # Lightning picks a free one
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{args[0]} timed out after {timeout:.0f} s:\n{out[-3000:]}")
    finally:
        try:  # no orphaned rank survives the test
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, out[-3000:]
    return subprocess.CompletedProcess(args, proc.returncode, out, None)


def test_lightning_ddp_plain_and_adversarial_two_processes(tmp_path):
    from medsec.data.phantoms import load_phantoms, write_phantoms
    from medsec.training.checkpoint import load_classifier
    from medsec.training.job import evaluate_classifier

    phantoms = write_phantoms(tmp_path / "phantoms.npz", 384, 96, 96, 32, 0)
    run_script([str(HERE / "ddp_train_script.py"), str(phantoms), str(tmp_path),
                "plain,adversarial"])
    data = load_phantoms(phantoms)
    for mode in ("plain", "adversarial"):
        report = json.loads((tmp_path / f"{mode}.json").read_text())
        assert report["world_size"] == 2 and report["device"] == "cpu x2"
        # both ranks end with bit-identical weights (DDP all-reduce + the same selected epoch)
        assert report["identical"] and report["max_abs_diff"] == 0.0
        assert len(report["history"]) == 3
        # the saved checkpoint loads and scores what rank 0 measured; chance is 0.5
        model, meta = load_classifier(tmp_path / f"{mode}.pt")
        assert meta["device"] == "cpu x2" and meta["precision"] == "32"
        acc = evaluate_classifier(model, data.splits["test"], data.num_classes).metrics
        assert acc["test_acc"] == pytest.approx(report["test_acc"])
        assert report["test_acc"] >= 0.65, (mode, report["test_acc"])


@pytest.fixture(scope="module")
def dp_data(tmp_path_factory):
    from medsec.data.phantoms import load_phantoms, write_phantoms

    path = write_phantoms(tmp_path_factory.mktemp("dp") / "p.npz", 256, 16, 16, 16, 0)
    images, labels = load_phantoms(path).splits["train"].tensors()
    return images.numpy(), labels.numpy()


def test_dpddp_two_processes_same_epsilon_as_one_noise_added_once(dp_data):
    """Opacus DPDDP: 2 processes = 1 process for the accountant (same q, noise, steps), and the
    Gaussian noise of a global step is added once (rank 0), not once per rank."""
    import torch

    from medsec.privacy.accounting import epsilon_for
    from medsec.privacy.ddp import DDPDPSpec, build_net, train_dp_distributed

    images, labels = dp_data
    spec = DDPDPSpec(images, labels, epochs=2, batch_size=64, noise_multiplier=1.0,
                     max_grad_norm=1.0, lr=0.05, accountant="prv")
    # one SGD step (lr 1, no momentum): the update is -(clipped grad sum + noise) / (q N).
    # The clipped mean has L2 norm <= C, the noise N(0, (sigma C)^2) per coordinate, so the
    # per-coordinate std of the update is sigma C / (q N); noise on both ranks would give
    # sqrt(2) times that.
    sigma, clip = 4.0, 0.01
    noisy = DDPDPSpec(images, labels, batch_size=64, noise_multiplier=sigma,
                      max_grad_norm=clip, lr=1.0, max_steps=1)
    [one] = train_dp_distributed(spec, world_size=1, timeout=300)  # in this process
    two, after = train_dp_distributed([spec, noisy], world_size=2, timeout=500)
    q = 64 / 256
    assert one.sample_rate == two.sample_rate == q  # the global rate, not batch / shard
    assert one.steps == two.steps == 2 * 4
    oracle = epsilon_for(1.0, q, 8, 1e-5, "prv")  # accountant run offline on (sigma, q, T)
    assert two.epsilon == pytest.approx(one.epsilon, rel=1e-9)
    assert two.epsilon == pytest.approx(oracle, rel=1e-6)

    before = build_net(noisy).state_dict()
    delta = torch.cat([(after.state_dict[k] - before[k]).flatten() for k in before
                       if before[k].is_floating_point() and "normalize" not in k])
    assert delta.numel() > 5000
    expected = sigma * clip / (q * 256)
    assert delta.std().item() == pytest.approx(expected, rel=0.08)
