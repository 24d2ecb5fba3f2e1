"""mobilesd: on-device Stable Diffusion deployment toolchain.

Stages (one direction): load -> quantize (optional) -> components -> passes -> convert -> verify -> bundle.
"""

__version__ = "0.1.0"

from mobilesd.errors import MobileSDError  # noqa: E402,F401
