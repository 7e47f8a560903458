"""FAKE sglang.srt.entrypoints.engine (0.5.23): Engine with async_generate's exact parameters."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from typing import Any, AsyncIterator, Dict, List, Optional, Union

from sglang.srt.managers.tokenizer_manager import TokenizerManager
from sglang.srt.server_args import ServerArgs

_UNMODELLED = ("prompt", "image_data", "audio_data", "video_data", "mm_hashes", "mm_content_hashes",
               "token_ids_logprob", "lora_path", "custom_logit_processor", "bootstrap_host", "bootstrap_port",
               "bootstrap_room", "disagg_prefill_dp_rank", "kv_router_hint", "external_trace_header",
               "session_params", "session_id", "cache_salt")


class Engine:
    """In-process engine: Engine(server_args=ServerArgs(...)) or Engine(**server_args_fields)."""

    __slots__ = ("server_args", "tokenizer_manager", "loop")

    def __init__(self, **kwargs: Any) -> None:
        if "server_args" in kwargs:
            if len(kwargs) > 1:
                raise TypeError("fake sglang: Engine(server_args=...) ignores other keyword arguments in sglang "
                                f"0.5.23; got {sorted(set(kwargs) - {'server_args'})}")
            server_args = kwargs["server_args"]
        else:
            kwargs.setdefault("log_level", "error")
            server_args = ServerArgs(**kwargs)
        if not isinstance(server_args, ServerArgs):
            raise TypeError(f"server_args must be a ServerArgs, not {type(server_args).__name__}")
        if server_args.lora_paths or server_args.enable_lora or server_args.disaggregation_mode != "null":
            raise NotImplementedError("fake sglang: LoRA / disaggregation are not modelled")
        self.server_args = server_args
        self.tokenizer_manager = TokenizerManager(server_args)
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = asyncio.new_event_loop()

    def _resolve_routed_dp_rank(self, routed_dp_rank: Optional[int], data_parallel_rank: Optional[int]) -> Optional[int]:
        if data_parallel_rank is not None:
            warnings.warn("'data_parallel_rank' is deprecated, use 'routed_dp_rank' instead.", DeprecationWarning,
                          stacklevel=3)
            if routed_dp_rank is None:
                routed_dp_rank = data_parallel_rank
        if routed_dp_rank is not None:
            dp_size = self.server_args.dp_size
            if dp_size <= 1 and routed_dp_rank == 0:
                return None
            if routed_dp_rank < 0 or routed_dp_rank >= dp_size:
                raise ValueError(f"routed_dp_rank={routed_dp_rank} out of range [0, {dp_size})")
        return routed_dp_rank

    async def async_generate(
        self,
        prompt: Optional[Union[List[str], str]] = None,
        sampling_params: Optional[Union[List[Dict], Dict]] = None,
        input_ids: Optional[Union[List[List[int]], List[int]]] = None,
        image_data: Optional[Any] = None,
        audio_data: Optional[Any] = None,
        video_data: Optional[Any] = None,
        mm_hashes: Optional[Any] = None,
        mm_content_hashes: Optional[Any] = None,
        return_logprob: Optional[Union[List[bool], bool]] = False,
        logprob_start_len: Optional[Union[List[int], int]] = None,
        top_logprobs_num: Optional[Union[List[int], int]] = None,
        token_ids_logprob: Optional[Union[List[List[int]], List[int]]] = None,
        lora_path: Optional[List[Optional[str]]] = None,
        custom_logit_processor: Optional[Union[List[str], str]] = None,
        require_reasoning: bool = False,
        return_hidden_states: Any = False,
        return_routed_experts: bool = False,
        routed_experts_start_len: int = 0,
        stream: bool = False,
        bootstrap_host: Optional[Union[List[str], str]] = None,
        bootstrap_port: Optional[Union[List[int], int]] = None,
        bootstrap_room: Optional[Union[List[int], int]] = None,
        routed_dp_rank: Optional[int] = None,
        disagg_prefill_dp_rank: Optional[int] = None,
        data_parallel_rank: Optional[int] = None,
        kv_router_hint: Optional[Dict] = None,
        external_trace_header: Optional[Dict] = None,
        rid: Optional[Union[List[str], str]] = None,
        session_params: Optional[Dict] = None,
        priority: Optional[int] = None,
        session_id: Optional[str] = None,
        *,
        cache_salt: Optional[Union[List[str], str]] = None,
    ) -> Union[Dict, AsyncIterator[Dict]]:
        given = dict(locals())
        for name in _UNMODELLED:
            if given[name] is not None:
                raise NotImplementedError(f"fake sglang: async_generate({name}=...) is not modelled")
        if return_hidden_states or return_routed_experts or require_reasoning:
            raise NotImplementedError("fake sglang: hidden states / routed experts / require_reasoning not modelled")
        if not stream:
            raise NotImplementedError("fake sglang: only stream=True is modelled")
        if not self.server_args.skip_tokenizer_init or not self.server_args.incremental_streaming_output:
            raise NotImplementedError("fake sglang: only skip_tokenizer_init + incremental_streaming_output")
        if input_ids is None or (input_ids and isinstance(input_ids[0], list)) or not isinstance(rid, (str, type(None))):
            raise NotImplementedError("fake sglang: one request of input_ids per call is modelled")
        if return_logprob and logprob_start_len not in (None, -1):
            raise NotImplementedError("fake sglang: prompt logprobs (logprob_start_len >= 0) are not modelled")
        rank = self._resolve_routed_dp_rank(routed_dp_rank, data_parallel_rank)
        return self.tokenizer_manager.generate_stream(
            input_ids=list(input_ids), sampling_params=dict(sampling_params or {}), rid=rid or uuid.uuid4().hex,
            routed_dp_rank=rank, priority=priority, return_logprob=bool(return_logprob),
            top_logprobs_num=int(top_logprobs_num or 0))

    def shutdown(self) -> None:
        self.tokenizer_manager.shutdown()
