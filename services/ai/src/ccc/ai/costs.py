"""Prices per token from litellm's cost map, read as the JSON file litellm ships.

Importing litellm takes seconds and, unless ``LITELLM_LOCAL_MODEL_COST_MAP=True``, fetches the
map from the internet; the cost of a call needs neither, so we read the bundled map directly.
"""

from __future__ import annotations

import functools
import json
import logging
from importlib import metadata
from typing import Any

log = logging.getLogger(__name__)
COST_MAP_FILE = "litellm/model_prices_and_context_window_backup.json"


@functools.cache
def cost_map() -> dict[str, Any]:
    try:
        path = metadata.distribution("litellm").locate_file(COST_MAP_FILE)
        return dict(json.loads(path.read_text()))
    except (metadata.PackageNotFoundError, OSError, ValueError):
        log.warning("litellm's cost map is not readable; costs count as 0")
        return {}


def prices(model: str) -> tuple[float, float] | None:
    """(input, output) USD per token for ``model`` (``provider/model`` or bare), if known."""
    table = cost_map()
    for name in (model, model.split("/", 1)[-1]):
        entry = table.get(name)
        if isinstance(entry, dict) and "input_cost_per_token" in entry:
            return (
                float(entry.get("input_cost_per_token") or 0.0),
                float(entry.get("output_cost_per_token") or 0.0),
            )
    return None


def cost(
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    override: tuple[float | None, float | None] = (None, None),
) -> float:
    """USD for one call: the provider's configured prices first, then litellm's map, else 0."""
    known = prices(model) or (0.0, 0.0)
    input_price = override[0] if override[0] is not None else known[0]
    output_price = override[1] if override[1] is not None else known[1]
    return prompt_tokens * input_price + completion_tokens * output_price
