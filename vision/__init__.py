"""vision: small-model papers on top of ``headscope.common``.

- ``vision.kan``: B-spline KAN layers (efficient-kan ``KANLinear``, SpectralKAN's ``WKANLinear``)
- ``vision.spectralkan``: SpectralKAN hyperspectral change detection (+ MLP/CNN baselines)
- ``vision.lsnet``: LSNet underwater image enhancement; ``vision.metrics``: PSNR/SSIM/UIQM/UCIQE
- ``vision.data``: HSI ``.mat`` loaders, underwater paired folders, synthetic generators
- ``vision.ood``: ConjNorm and peer OOD detectors

Submodules are imported on use, so ``import vision`` is cheap.
"""
