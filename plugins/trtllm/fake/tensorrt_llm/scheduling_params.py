"""Fake of tensorrt_llm/scheduling_params.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple


@dataclass(slots=True, kw_only=True)
class SchedulingParams:
    """attention_dp_rank: the attention-DP rank to run on; attention_dp_relax: may the scheduler move it."""

    attention_dp_rank: Optional[int] = None
    attention_dp_relax: bool = True
    agent_hierarchy: Optional[List[Tuple[str, int]]] = None
