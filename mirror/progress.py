"""A progress bar on a terminal: the one place tqdm is built, imported only when a bar is shown."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm


def progress_bar(enabled: bool, desc: str, unit: str, **options: Any) -> tqdm[Any] | None:
    """Return a bar on stderr that leaves no line behind (`total`, `unit_scale` in `options`), or None.

    None when not `enabled` (stderr is not a terminal, or stdout carries `--json`).
    """
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(desc=desc, unit=unit, leave=False, **options)
