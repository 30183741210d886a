"""Segmentation: MONAI segmenters, Dice/IoU/HD95 metrics, dense attacks (erase/forge lesions).

The core library only (plain PyTorch/MONAI); Prefect and MLflow live in ``tasks``/``flows``.
"""
