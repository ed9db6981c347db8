"""The traffic mix: which kinds of request a run sends, and in what proportion."""

from __future__ import annotations

# Request kinds and their default share of the traffic (percent).
DEFAULT_MIX = "json=40,batch=15,octet=15,png=10,v2_fp32=10,v2_uint8=10"
KINDS = ("json", "batch", "octet", "png", "v2_fp32", "v2_uint8")


def parse_mix(text: str) -> tuple[list[str], list[float]]:
    """``"json=40,png=10"`` -> (["json", "png"], [40.0, 10.0]); unknown kinds are an error."""
    kinds, weights = [], []
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, _, weight = item.partition("=")
        if kind not in KINDS or not weight:
            raise ValueError(f"--mix item {item!r}: expected kind=weight with kind in {KINDS}")
        if float(weight) > 0:
            kinds.append(kind)
            weights.append(float(weight))
    if not kinds:
        raise ValueError(f"--mix {text!r} gives no kind a positive weight")
    return kinds, weights
