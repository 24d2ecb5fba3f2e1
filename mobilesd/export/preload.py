"""Imported once by the export's forkserver (mobilesd.export.runner): the heavy modules every worker needs.

Importing only: no model is loaded and no torch op runs, so the forked workers start clean.
"""

import diffusers.pipelines.stable_diffusion  # noqa: F401  (the pipeline classes load_pipeline uses)
import litert_torch  # noqa: F401  (the converter; the largest import)
import transformers.models.clip  # noqa: F401
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel  # noqa: F401
