"""DeepFakes: generate synthetic and tampered medical images, detect them, private synthesis.

- :mod:`~medsec.deepfakes.config`: ``DeepfakeConfig`` (the ``deepfake:`` config section).
- :mod:`~medsec.deepfakes.networks`: class-conditional MONAI generator/discriminator and
  generator checkpoints; :mod:`~medsec.deepfakes.gan`: their Lightning training (optionally
  with an Opacus DP-SGD discriminator); :mod:`~medsec.deepfakes.sampling`: seeded sampling.
- :mod:`~medsec.deepfakes.dataset`: the DeepFake dataset (MedMNIST-format npz + metadata JSON).
- :mod:`~medsec.deepfakes.features`, :mod:`~medsec.deepfakes.evaluate`: quality (FID-style,
  k-NN precision/recall in the project classifier's features), memorisation, membership
  inference, train-on-synthetic/test-on-real utility (formulas: :mod:`medsec.metrics.generative`).
- :mod:`~medsec.deepfakes.regions`, :mod:`~medsec.deepfakes.tamper`: CT-GAN/Jekyll-style
  tampering by conditional inpainting inside a region (the rest untouched).
- :mod:`~medsec.deepfakes.detector`: real-vs-fake / real-vs-tampered detectors.
- :mod:`~medsec.deepfakes.pipeline`: the stage's steps; :mod:`~medsec.deepfakes.figures`.

Submodules are imported on use: ``import medsec.deepfakes.config`` stays light.
"""
