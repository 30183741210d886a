"""MedSec: how far a medical-imaging model can be trusted (security and privacy benchmark).

Core library: plain PyTorch / MONAI / Lightning. It never imports Prefect or MLflow; the
orchestration (``flows/``, ``tasks/``) and tracking (``tasks/tracking.py``) live outside.
"""

__version__ = "0.1.0"
