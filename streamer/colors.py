"""Brand colours: parse `#rrggbb` / `#rgb`, and judge them against white button text (WCAG 2).

The shipped button puts white 16px bold text on `tenant.vars.brand_color`; below 4.5:1 (WCAG AA
for normal-size text) many readers cannot read the one thing they must click, so such a colour
is refused (the default blue is used) and `streamer check` says why.
"""

from __future__ import annotations

import re

DEFAULT_BUTTON_COLOR = "#2563eb"
MIN_CONTRAST = 4.5
_HEX = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


def parse_hex_color(value: object) -> str | None:
    """`#RGB` or `#RRGGBB` → `#rrggbb`; None for anything else."""
    if not isinstance(value, str) or not _HEX.match(value.strip()):
        return None
    digits = value.strip()[1:].lower()
    return "#" + ("".join(c * 2 for c in digits) if len(digits) == 3 else digits)


def relative_luminance(color: str) -> float:
    """WCAG 2 relative luminance of a `#rrggbb` colour."""

    def channel(hex_pair: str) -> float:
        c = int(hex_pair, 16) / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(color[i : i + 2]) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio (1 to 21) of two `#rrggbb` colours."""
    lighter, darker = sorted((relative_luminance(foreground), relative_luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def brand_color_problem(value: object) -> str | None:
    """Why `value` cannot be the button colour, or None when it can."""
    color = parse_hex_color(value)
    if color is None:
        return f"{value!r} is not a hex colour such as #1a56db"
    ratio = contrast_ratio("#ffffff", color)
    if ratio < MIN_CONTRAST:
        return (
            f"{color} gives white button text a contrast of {ratio:.1f}:1, below {MIN_CONTRAST}:1; "
            "choose a darker colour"
        )
    return None


def button_color(value: object) -> str:
    """The button's background: the brand colour when it is valid and readable, else the default."""
    return DEFAULT_BUTTON_COLOR if value is None or brand_color_problem(value) else parse_hex_color(value)  # type: ignore[return-value]
