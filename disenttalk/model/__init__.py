"""Networks and training steps: denoiser (Eq. 4–7), diffusion (Eq. 3, 8, 9), sync expert (Eq. 10)."""
