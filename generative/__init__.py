"""generative: diffusion image interpolation (NoiseDiffusion, ICLR 2024) with slerp / noise baselines, on diffusers.

Modules (one per concern, diffusers-style separation):
``ddim`` (DDIM sampling and inversion through diffusers' schedulers), ``models`` (pixel
``UNet2DModel`` and latent VAE + UNet denoisers; the bundled DDPM), ``noisediffusion``,
``baselines`` (lerp, slerp, noise), ``pipeline`` (invert -> mix -> denoise), ``metrics``,
``train`` (the bundled DDPM), ``data`` (offline photos), ``cli`` (``headscope gen``).
See docs/generative.md.
"""
