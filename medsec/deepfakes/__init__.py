"""DeepFakes: generate synthetic and tampered medical images, detect them, private synthesis.

- :mod:`~medsec.deepfakes.config`: ``DeepfakeConfig`` (the ``deepfake:`` config section).
- :mod:`~medsec.deepfakes.networks`: class-conditional generator/discriminator from MONAI's
  ``Generator`` / ``Discriminator``; :mod:`~medsec.deepfakes.gan`: their Lightning training
  (manual optimisation), optionally with an Opacus DP-SGD discriminator.
- :mod:`~medsec.deepfakes.sampling`, :mod:`~medsec.deepfakes.checkpoint`,
  :mod:`~medsec.deepfakes.dataset`: seeded sampling, generator checkpoints (weights_only,
  dataset/shape checks), the DeepFake dataset (MedMNIST-format npz + metadata JSON).
- :mod:`~medsec.deepfakes.features`, :mod:`~medsec.deepfakes.evaluate`: FID-style distance and
  k-NN precision/recall in the project classifier's feature space, memorisation, membership
  inference against the generator, train-on-synthetic/test-on-real utility
  (formulas in :mod:`medsec.metrics.generative`).
- :mod:`~medsec.deepfakes.regions`, :mod:`~medsec.deepfakes.tamper`: CT-GAN/Jekyll-style
  tampering by conditional inpainting inside a region (the rest untouched).
- :mod:`~medsec.deepfakes.detector`: real-vs-fake / real-vs-tampered detectors.
- :mod:`~medsec.deepfakes.pipeline`: the stage's steps; :mod:`~medsec.deepfakes.figures`.

Submodules are imported on use: ``import medsec.deepfakes.config`` stays light.
"""

