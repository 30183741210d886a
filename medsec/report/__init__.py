"""The MedSec trust report: one leaderboard per dataset joining every stage's MLflow runs.

Plain run records in (:class:`medsec.report.records.RunRecord`, built by ``tasks/report.py``
from MLflow), tables, figures, Markdown and self-contained HTML out. No MLflow import here.
"""
