"""The training command's flags given as text, parsed into `Config` values, each bad value one line naming the flag:
``--stage2_weight_cap`` ('none' = uncapped), ``--stage2_refresh_every`` ('never') and ``--temperature_probe`` (a
comma-separated list; 'none' = off)."""

from __future__ import annotations

from cml_tf.training.presets import REFRESH_NEVER


def weight_cap(text: str) -> float | None:
    """``--stage2_weight_cap``: a number, or None for 'none' / 'inf' (uncapped)."""
    text = text.strip().lower()
    if text in ("none", "inf", "infinity"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--stage2_weight_cap: expected a number >= 1 or 'none', got {text!r}") from None


def refresh_every(text: str) -> int:
    """``--stage2_refresh_every``: an integer >= 0, or `REFRESH_NEVER` for 'never'."""
    text = text.strip().lower()
    if text == "never":
        return REFRESH_NEVER
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"--stage2_refresh_every: expected an integer >= 0 or 'never', got {text!r}") from None
    if value < 0:
        raise ValueError(f"--stage2_refresh_every: expected an integer >= 0 or 'never', got {value}")
    return value


def temperatures(text: str) -> tuple[float, ...]:
    """``--temperature_probe``: the τ values, () for 'none' or nothing."""
    text = text.strip().lower()
    if text in ("", "none"):
        return ()
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise ValueError(f"--temperature_probe: expected comma-separated numbers or 'none', got {text!r}") from None
