"""The tiny digits Stable Diffusion trained in this repo (assets/tiny-digits-sd) and its quality metrics.

data: digits images and prompts; model: architecture and diffusers layout; classifier: the digit
classifier; train: `mobilesd train-tiny`; metrics: `mobilesd eval`; card: the model card.
"""
