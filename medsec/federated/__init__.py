"""Federated learning across simulated hospitals, on Flower (``flwr``), without Prefect/MLflow.

- :mod:`~medsec.federated.config`: ``FederatedConfig`` (the ``federated:`` config section);
  :mod:`~medsec.federated.partition`: IID / label-skew / Dirichlet splits of a dataset.
- :mod:`~medsec.federated.local`: a hospital's local update over the project's training loop
  (FedProx term, Opacus DP-SGD); :mod:`~medsec.federated.poisoning`: malicious hospitals.
- :mod:`~medsec.federated.client`, :mod:`~medsec.federated.server`: the Flower ``ClientApp``
  and ``ServerApp``; :mod:`~medsec.federated.strategies`: Flower strategies and central DP in
  a guard (minimum replies, shape checks, costs); CKKS aggregation: :mod:`~medsec.federated.he`.
- :mod:`~medsec.federated.simulation`: in-process or Ray federations;
  :mod:`~medsec.federated.secagg`: Flower SecAgg+; :mod:`~medsec.federated.apps`: the apps
  for Flower's deployment engine (``flwr run``).

Heavy modules are imported on use: ``import medsec.federated.config`` stays light.
"""
