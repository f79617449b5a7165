"""Tables of another tool's flags against ours (open_clip_train's for stage 1, GeoChat's/LLaVA's for stage 2), rendered
the one way the README shows them; each tool keeps its rows, and a test keeps its README table equal to them."""

from __future__ import annotations

from collections.abc import Iterable


def markdown_flag_table(their_tool: str, rows: Iterable[tuple[str, str, str]]) -> str:
    """``rows``: (their flag as shown, our flag or what happens instead, how the meaning differs). Our flags are
    code-formatted, an empty one reads "same name"; a ``|`` in the text becomes ``/`` (it would split the cell)."""
    lines = [f"| {their_tool} flag | here | how the meaning differs |", "|---|---|---|"]
    for flag, ours, differs in rows:
        ours = f"`{ours}`" if ours.startswith("--") else (ours or "same name")
        lines.append(f"| {flag} | {ours} | {differs.replace('|', '/')} |")
    return "\n".join(lines)
