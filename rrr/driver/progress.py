"""The progress bar of the long commands (`rrr build-failures`, `rrr eval` and the periodic
evaluation inside `rrr train`): one set-up, so they look and switch off alike.

On stderr (tqdm's default), so stdout keeps what the commands print for people and scripts
(JSON summaries, tables); `logging.progress=false` turns it off. Samples done, rate and time
left are tqdm's own; a caller advances the bar as each chunk of its work comes back.
"""

from __future__ import annotations

from typing import Any


def progress_bar(enabled: bool, total: int, desc: str, unit: str, initial: int = 0) -> Any:
    """A tqdm bar over `total` units (a context manager; `update(n)` as work comes back).

    `initial`: units already done before it starts (a resumed build's finished shards); they
    count towards the bar, not towards the rate and the time left. `leave=None`: a bar on the
    top line stays when it closes (a command's own); one shown under another (an evaluation
    under `rrr train`'s step bar) goes.
    """
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                leave=None)  # fmt: skip
