"""A command's ``--help``: its usage, then its flags in named groups, the ones a user needs first."""

from __future__ import annotations

import textwrap


def flag_lines(flag) -> list[str]:
    """``--name (default: …)`` and the help text wrapped under it."""
    name = f"--[no]{flag.name}" if flag.flag_type() == "bool" else f"--{flag.name}"
    default = "" if flag.default is None else f" (default: {flag.default})"
    return [f"  {name}{default}"] + textwrap.wrap(flag.help, 110, initial_indent="      ", subsequent_indent="      ")


def grouped_help(flags_by_name: dict, usage: list[str], groups) -> str:
    """The help text: ``usage`` lines, then each group ``(title, names, prefixes)`` (the named flags in order, then
    those starting with a prefix), then the flags no group took, under "Other".

    Args:
        flags_by_name: flag name -> absl flag.
        usage: the lines before the flags.
        groups: (title, [flag names], (name prefixes, ...)) in display order.
    """
    lines = list(usage)
    shown: set[str] = set()
    for title, names, more in groups:
        group = [n for n in names if n in flags_by_name]
        group += sorted(
            n for n in flags_by_name if n not in group and n not in shown and any(n.startswith(m) for m in more)
        )
        group = [n for n in group if n not in shown]
        if not group:
            continue
        lines += ["", f"{title}:"]
        for n in group:
            lines += flag_lines(flags_by_name[n])
            shown.add(n)
    rest = sorted(n for n in flags_by_name if n not in shown)
    if rest:
        lines += ["", "Other:"]
        for n in rest:
            lines += flag_lines(flags_by_name[n])
    return "\n".join(lines)
