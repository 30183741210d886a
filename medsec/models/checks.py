"""Checks of the classifier contract: images float (N, C, H, W) in [0, 1] -> logits (N, K).

One implementation of each check, raising ValueError with a message that says what to fix;
the attack core (:class:`medsec.attacks.base.Attack`) and the defenses call these.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medsec.models.guard import model_guard


def check_images(images: Tensor, spatial_dims: tuple[int, ...] = (2, 3),
                 owner: str = "Attack") -> None:
    """Validate images: a float tensor (N, C, H, W) or (N, C, D, H, W) as ``spatial_dims``
    allows, non-empty, finite, in [0, 1]. ``owner`` names the caller in the shape message."""
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor in [0, 1], got dtype {images.dtype}")
    if images.dim() - 2 not in spatial_dims:
        shapes = " or ".join("N,C," + ",".join("DHW"[3 - d :]) for d in spatial_dims)
        raise ValueError(f"{owner} expects images shaped {shapes}; got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is empty (N = 0)")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"images must lie in [0, 1] (pixel space; normalisation belongs inside the "
            f"model), got min={lo:.4g} max={hi:.4g}")


def check_label_dtype(labels: Tensor) -> None:
    """Labels must be an integer tensor (any shape)."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"labels must be an integer (int64) tensor, got dtype {labels.dtype}")


def check_label_shape(labels: Tensor, images: Tensor) -> None:
    """Classification: one label per image, shape (N,)."""
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},) to match images, "
                         f"got {tuple(labels.shape)}")


def check_multi_hot(labels: Tensor, n: int) -> None:
    """Multi-label targets: a multi-hot tensor (n, L), L >= 1, every value 0 or 1 (float or
    integer dtype; several findings per image)."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 2 or labels.shape[0] != n or labels.shape[1] < 1:
        raise ValueError(f"multi-hot labels must have shape ({n}, num_findings) to match the "
                         f"images, got {tuple(labels.shape)}")
    if labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"multi-hot labels must be float or integer 0/1, got dtype {labels.dtype}")
    if labels.numel() and not bool(((labels == 0) | (labels == 1)).all()):
        bad = labels[(labels != 0) & (labels != 1)].flatten()[0].item()
        raise ValueError(f"multi-hot labels must be 0 or 1 per finding, got the value {bad}")


def check_findings(labels: Tensor, num_logits: int) -> None:
    """Multi-hot labels (N, L) need one logit per finding: L == the model's output width."""
    if labels.shape[1] != num_logits:
        raise ValueError(f"multi-hot labels have {labels.shape[1]} findings but the model returns "
                         f"{num_logits} logits per image (one per finding needed)")


def is_multi_hot(labels: object) -> bool:
    """True for 2-D label tensors (N, L): multi-label targets, as opposed to class indices
    (N,) or dense masks (N, *spatial) of >= 2 spatial dimensions."""
    return isinstance(labels, Tensor) and labels.dim() == 2


def check_logits(logits: Tensor, n: int, multilabel: bool = False) -> int:
    """Check a classifier's output for ``n`` images: finite 2-D logits (n, K), K >= 2, not
    probabilities, not a dense (segmentation) output. Returns K.

    ``multilabel``: one logit per finding (K >= 1 allowed, read through a sigmoid); an output
    with every value in [0, 1] is refused as sigmoid probabilities."""
    if not isinstance(logits, Tensor):
        raise ValueError(f"model must return a tensor of logits, got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[0] != n:
        hint = (" (this looks like a dense/segmentation output: use a segmentation attack or a "
                "per-example loss_fn with an Attack subclass that overrides check_output)"
                if logits.dim() > 2 else "")
        raise ValueError(f"model output must be 2-D logits of shape (N={n}, num_classes), "
                         f"got {tuple(logits.shape)}{hint}")
    if logits.shape[1] < (1 if multilabel else 2):
        raise ValueError(f"model must return at least 2 class logits, got {logits.shape[1]} "
                         "(for a single-logit binary model, return [-z, z] or [0, z])")
    if not torch.isfinite(logits).all():
        raise ValueError("model output contains NaN or infinite values")
    in_unit = bool(((logits >= 0) & (logits <= 1)).all())
    if multilabel and in_unit:
        raise ValueError(
            "model output looks like sigmoid probabilities (every value in [0, 1]); attacks "
            "need one logit per finding: remove the final sigmoid from the model")
    ones = torch.ones(n, dtype=logits.dtype, device=logits.device)
    if in_unit and bool(torch.allclose(logits.sum(dim=1), ones, atol=1e-4)):
        raise ValueError(
            "model output looks like probabilities (every row in [0, 1] summing to 1); "
            "attacks need logits: remove the final softmax from the model")
    return int(logits.shape[1])


def check_label_range(labels: Tensor, num_classes: int) -> None:
    """Check that labels lie in [0, num_classes)."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for a model with {num_classes} classes, "
            f"got min={int(labels.min())} max={int(labels.max())}")


def check_classifier(model: nn.Module, images: Tensor, labels: Tensor | None = None) -> int:
    """Check that ``model`` is a classifier for ``images``; return its number of classes K.

    ``images`` float (N, C, H, W) (or (N, C, D, H, W)) in [0, 1]; ``labels`` (N,) integers in
    [0, K) when given, or multi-hot (N, L) in {0, 1} with L == K (multi-label). The model
    runs once, in eval mode with frozen parameters (state restored), on the first 64 images
    and must return logits (N, K), K >= 2 (K >= 1 for multi-hot labels) - not
    probabilities, not a dense (segmentation) output. Raises ValueError saying what is wrong.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_images(images)
    multilabel = is_multi_hot(labels)
    if labels is not None and multilabel:
        check_multi_hot(labels, images.shape[0])
    elif labels is not None:
        check_label_dtype(labels)
        check_label_shape(labels, images)
    head = images[: min(len(images), 64)]
    with model_guard(model), torch.inference_mode():
        logits = model(head)
    num_classes = check_logits(logits, head.shape[0], multilabel)
    if labels is not None:
        if multilabel:
            check_findings(labels, num_classes)
        else:
            check_label_range(labels, num_classes)
    return num_classes
