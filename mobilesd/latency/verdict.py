"""Judge a latency report against the target: PASS / MISS only where the run is comparable with it.

The target is seconds end to end for a 512x512 image on a phone. A run on a host, an app core built for a
desktop (JVM, Linux, software WebGPU), an estimate for a laptop, or a run at another image size says
nothing about that target: it gets "not comparable" with the reasons, never PASS or MISS. A hand-made
example (``"synthetic": true``, schema 1.1) is not judged at all: it is a "synthetic example".
"""

from __future__ import annotations

from dataclasses import dataclass

from mobilesd.latency.schema import TARGET_SECONDS, end_to_end

PASS = "PASS"
MISS = "MISS"
NOT_COMPARABLE = "not comparable"
SYNTHETIC = "synthetic example"
TARGET_RES = (512, 512)
# device.os of a report from a phone (or tablet) app or a phone browser starts with one of these
PHONE_OS = ("android", "ios", "ipados")


@dataclass(frozen=True)
class Verdict:
    status: str  # PASS | MISS | NOT_COMPARABLE | SYNTHETIC
    text: str    # the whole sentence a reader sees, starting with the status

    @property
    def judged(self) -> bool:
        return self.status in (PASS, MISS)


def target_of(report: dict) -> float:
    return float(report.get("target_s", TARGET_SECONDS))


def not_comparable_reasons(report: dict) -> list[str]:
    """Why ``report`` cannot be judged against the phone 512x512 target; empty when it can."""
    from mobilesd.latency.roofline import load_devices

    reasons = []
    by, dev = report["measured_by"]["kind"], report["device"]
    if report["kind"] == "estimate":
        entry = load_devices().get(dev.get("device_key") or (report.get("estimate") or {}).get("device_key"))
        if entry is None or entry.get("calibration_only"):  # calibration-only entries are Macs and iPads
            reasons.append(f"not a phone: an estimate for {dev['name']}")
    elif by == "host":
        reasons.append(f"not a phone: measured on a host ({dev['os']})")
    elif not dev["os"].strip().lower().startswith(PHONE_OS):
        reasons.append(f"not a phone: the {by} ran on {dev['os']} ({dev['name']})")
    s = report["settings"]
    if (s["width"], s["height"]) != TARGET_RES:
        reasons.append(f"{s['width']}x{s['height']}, not {TARGET_RES[0]}x{TARGET_RES[1]}")
    return reasons


def _qualifiers(report: dict) -> list[str]:
    s = report["settings"]
    notes = ["estimate, not a measurement"] if report["kind"] == "estimate" else []
    notes.append(f"{s['steps']} steps")
    if s["cfg_mode"] == "none":
        notes.append("without classifier-free guidance")
    return notes


def verdict(report: dict) -> Verdict:
    """The verdict of one run, with the qualifiers a reader needs."""
    e2e, target = end_to_end(report), target_of(report)
    if report.get("synthetic"):
        return Verdict(SYNTHETIC, f"{SYNTHETIC}: hand-made numbers, not a measurement or an estimate; "
                                  f"not judged against the {target:g} s target")
    notes = "; ".join(_qualifiers(report))
    reasons = not_comparable_reasons(report)
    if reasons:
        return Verdict(NOT_COMPARABLE, f"{NOT_COMPARABLE} with the {target:g} s phone 512x512 target "
                                       f"({'; '.join(reasons)}): {e2e:.2f} s end to end [{notes}]")
    if e2e <= target:
        return Verdict(PASS, f"{PASS} meets the {target:g} s target ({e2e:.2f} s, {target - e2e:.2f} s to spare) "
                             f"[{notes}]")
    return Verdict(MISS, f"{MISS} misses the {target:g} s target by {e2e - target:.2f} s ({e2e:.2f} s) [{notes}]")
