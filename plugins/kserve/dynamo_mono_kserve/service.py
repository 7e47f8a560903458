"""GRPCInferenceService on the server's models: health, metadata, config, ModelInfer and ModelStreamInfer.

Inference goes through the core's one request path (ServedRequest: tracking, admission, timeout, finish) like
an HTTP /v1/completions request; failures become gRPC status codes (status.py). A cancelled call (the client
stops a stream, a deadline passes) cancels the handler, which aborts the engine request.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import grpc

from dynamo_mono.api import (
    REQUEST_FAILURES,
    ModelNotFound,
    InvalidRequest,
    ServedRequest,
    ServerState,
    check_completion,
    completion_generation,
)
from dynamo_mono_kserve.proto import kserve_pb2 as pb
from dynamo_mono_kserve.proto import kserve_pb2_grpc as pb_grpc
from dynamo_mono_kserve.status import grpc_error_type, grpc_status
from dynamo_mono_kserve.tensors import FINISH_REASON, STREAMING, TEXT_INPUT, TEXT_OUTPUT, TextRequest, infer_response
from dynamo_mono_kserve.tensors import parse_infer

PLATFORM = "dynamo-mono"
ENDPOINT_INFER, ENDPOINT_STREAM = "kserve_model_infer", "kserve_model_stream_infer"
_END = object()


class ShuttingDown(Exception):
    """New requests while the server drains."""


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The KServe v2 service over a ServerState (chat models, served as text completions)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._ids = 0

    # --- health and metadata ------------------------------------------------------------------
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.state.ready() and not self.state.draining)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        m = self.state.models.get(request.name)
        ready = (m is not None and m.kind == "chat" and request.version in ("", "1")
                 and bool(m.pool.ready_instances()) and not self.state.draining)
        return pb.ModelReadyResponse(ready=ready)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        await self._model_or_abort(request.name, request.version, context)
        T = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=request.name, versions=["1"], platform=PLATFORM,
            inputs=[T(name=TEXT_INPUT, datatype="BYTES", shape=[1]), T(name=STREAMING, datatype="BOOL", shape=[1])],
            outputs=[T(name=TEXT_OUTPUT, datatype="BYTES", shape=[-1]),
                     T(name=FINISH_REASON, datatype="BYTES", shape=[-1])])

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        await self._model_or_abort(request.name, request.version, context)
        cfg = pb.ModelConfig(
            name=request.name, platform=PLATFORM, backend=PLATFORM, max_batch_size=0,
            input=[pb.ModelInput(name=TEXT_INPUT, data_type=pb.TYPE_STRING, dims=[1]),
                   pb.ModelInput(name=STREAMING, data_type=pb.TYPE_BOOL, dims=[1], optional=True)],
            output=[pb.ModelOutput(name=TEXT_OUTPUT, data_type=pb.TYPE_STRING, dims=[-1]),
                    pb.ModelOutput(name=FINISH_REASON, data_type=pb.TYPE_STRING, dims=[-1])])
        return pb.ModelConfigResponse(config=cfg)

    async def _model_or_abort(self, name: str, version: str, context: Any) -> None:
        try:
            self.state.model(name, kind="chat")
            if version not in ("", "1"):
                raise ModelNotFound(f"model '{name}' has no version '{version}' (versions: 1)", param="version")
        except REQUEST_FAILURES as exc:
            await context.abort(*grpc_status(exc))

    # --- inference ----------------------------------------------------------------------------
    def _served(self, req: TextRequest, endpoint: str, stream: bool) -> ServedRequest:
        """Validate against the model and build the request (not yet entered: tracking starts on entry)."""
        if self.state.draining:
            raise ShuttingDown("server is shutting down")
        model = self.state.model(req.model, kind="chat")
        if req.version not in ("", "1"):
            raise ModelNotFound(f"model '{req.model}' has no version '{req.version}' (versions: 1)", param="version")
        check_completion(self.state.settings, model, req.params, 1)
        self._ids += 1
        rid = f"kserve-{req.id or self._ids}-{self._ids}"
        build = completion_generation(self.state, model, [req.text], req.params, rid, echo=False)
        return ServedRequest(self.state, model.name, endpoint=endpoint, stream=stream, build=build,
                             classify=grpc_error_type)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        try:
            req = parse_infer(request)
            if req.streaming:
                raise InvalidRequest("Streaming is not supported for this endpoint", param=STREAMING)
            parts: list[str] = []
            finish = None
            async with self._served(req, ENDPOINT_INFER, False) as served:
                async with served.deadline():
                    async for step in served.work.steps():
                        if step.content:
                            parts.append(step.content)
                        if step.finish_reason is not None:
                            finish = step.finish_reason
            return infer_response(req, "".join(parts), finish)
        except ShuttingDown as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except REQUEST_FAILURES as exc:
            await context.abort(*grpc_status(exc))

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        """Each request of the stream runs concurrently; its responses (one per step with new text, or one in
        all when the request says streaming=false) come back as they are made, its failure as an
        error_message response (the stream goes on)."""
        out: asyncio.Queue = asyncio.Queue()
        tasks: set[asyncio.Task] = set()
        live = [1]  # the reader plus each request still running

        def done() -> None:
            live[0] -= 1
            if not live[0]:
                out.put_nowait(_END)

        async def one(request: Any) -> None:
            try:
                async for resp in self._stream_one(request):
                    out.put_nowait(pb.ModelStreamInferResponse(infer_response=resp))
            except ShuttingDown as exc:
                out.put_nowait(pb.ModelStreamInferResponse(error_message=f"UNAVAILABLE: {exc}"))
            except REQUEST_FAILURES as exc:
                code, message = grpc_status(exc)
                out.put_nowait(pb.ModelStreamInferResponse(error_message=f"{code.name}: {message}"))
            finally:
                done()

        async def reader() -> None:
            try:
                async for request in request_iterator:
                    live[0] += 1
                    task = asyncio.create_task(one(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            finally:
                done()

        read = asyncio.create_task(reader())
        try:
            while (item := await out.get()) is not _END:
                yield item
            await read  # re-raises a failed read of the request stream
        finally:
            pending = [read, *tasks]
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _stream_one(self, request: Any) -> AsyncIterator[Any]:
        req = parse_infer(request)
        deltas = req.streaming is not False
        async with self._served(req, ENDPOINT_STREAM, deltas) as served:
            async with served.deadline():
                if deltas:
                    async for step in served.work.steps():
                        if step.content or step.finish_reason is not None:
                            yield infer_response(req, step.content, step.finish_reason)
                    return
                parts: list[str] = []
                finish = None
                async for step in served.work.steps():
                    if step.content:
                        parts.append(step.content)
                    if step.finish_reason is not None:
                        finish = step.finish_reason
        yield infer_response(req, "".join(parts), finish)
