"""Exporting a Stable Diffusion model into a verified bundle (`mobilesd export`).

``options`` (what was asked, resolved into a plan), ``runner`` (steps in-process or in worker processes),
``tasks`` (the steps), ``checks`` (what makes a graph acceptable), ``quantized`` (a quantized model's
integers and tables), ``manifest`` (built in one place), ``core`` (the orchestration), ``faults`` (fault
injection for the tests).
"""

from mobilesd.export.core import export
from mobilesd.export.options import DEFAULT_PRECISION, TARGETS, ExportOptions, ExportPlan, make_plan

__all__ = ["export", "ExportOptions", "ExportPlan", "make_plan", "TARGETS", "DEFAULT_PRECISION"]
