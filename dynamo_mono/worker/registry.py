"""WorkerRegistry: the server's worker listener; authenticates workers and adds their instances to pools."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import fields
import logging
from typing import Any

from aiohttp import web

from dynamo_mono.config import ConfigError
from dynamo_mono.engine import MEDIA_KINDS, MODEL_KINDS, MediaLimits, ModelCard
from dynamo_mono.http.state import ServerState
from dynamo_mono.serving.model import ServedModel
from dynamo_mono.serving.models import new_served_model, set_model_gauges
from dynamo_mono.serving.pool import Instance
from dynamo_mono.transports import messages as m
from dynamo_mono.transports.framing import FramedConnection
from dynamo_mono.worker.model_files import unpack_model_files
from dynamo_mono.worker.remote_engine import RemoteEngine
from dynamo_mono.worker.session import WorkerSession

log = logging.getLogger("dynamo_mono.worker.registry")

REGISTER_TIMEOUT_S = 5.0


class WorkerRegistry:
    """Accepts worker connections on a TCP port and keeps the model pools in step with them."""

    def __init__(self, state: ServerState, *, token: str, host: str, port: int = 0,
                 max_frame: int = 16 << 20, heartbeat_interval: float = 0.5, heartbeat_misses: int = 3) -> None:
        self.state = state
        self._token = token.encode()
        self.host = host
        self.port = port
        self.max_frame = max_frame
        self.interval = heartbeat_interval
        self.misses = heartbeat_misses
        self.sessions: set[WorkerSession] = set()
        self._server: asyncio.base_events.Server | None = None
        self.removed = 0  # instances taken out of routing because their worker died (tests, metrics)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("accepting workers on %s:%d", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for s in list(self.sessions):
            await s.close()
        if self._server is not None:
            await self._server.wait_closed()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/workers/endpoint", self._endpoint)

    async def _endpoint(self, request: web.Request) -> web.Response:
        """Tells a worker that dialled the HTTP port where the worker listener is."""
        return web.json_response({"port": self.port, "protocol": m.PROTOCOL_VERSION})

    # --- one connection --------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = FramedConnection(reader, writer, max_frame=self.max_frame)
        try:
            frame = await asyncio.wait_for(conn.recv(), REGISTER_TIMEOUT_S)
            msg = m.decode(frame)
        except Exception as exc:  # timeouts, garbage, oversized frames: refuse quietly
            log.warning("worker connection from %s dropped before registering: %s", conn.peer, exc)
            conn.close()
            return
        if not isinstance(msg, m.Register):
            conn.close()
            return
        problem = self._check(msg)
        if problem is not None:
            log.warning("refused worker %s from %s: %s", msg.name or "?", conn.peer, problem)
            try:
                await conn.send(m.encode(m.Refused(problem)))
            except ConnectionError:
                pass
            conn.close()
            return
        self._join(conn, msg)

    def _check(self, reg: m.Register) -> str | None:
        # Constant-time compare; a wrong token learns nothing else about the server.
        if not hmac.compare_digest(reg.token.encode(), self._token):
            return "invalid worker token (set the server's --worker-token / DYN_WORKER_TOKEN on the worker)"
        if reg.protocol != m.PROTOCOL_VERSION:
            return f"worker protocol {reg.protocol} != server protocol {m.PROTOCOL_VERSION}"
        if not reg.cards:
            return "worker registered no instances"
        for card in reg.cards:
            if card.name != reg.model:
                return f"instance card names model {card.name!r}, registration says {reg.model!r}"
            if card.block_size != reg.cards[0].block_size:
                return f"the worker's instances disagree on the block size ({card.block_size} vs {reg.cards[0].block_size})"
            for kind, parser in (("reasoning_parser", card.reasoning_parser), ("tool_call_parser", card.tool_call_parser)):
                if parser is not None and parser not in self.state.plugins.registered(kind):
                    return f"the worker's {kind.replace('_', ' ')} {parser!r} is not installed on the server"
        model = self.state.models.get(reg.model)
        if model is None:
            if reg.model_files is None:
                return (f"model {reg.model!r} is not served here (this server serves {sorted(self.state.models)}) "
                        f"and the worker sent no model files to serve it from")
            if reg.model_files.kind not in MODEL_KINDS:
                return (f"model {reg.model!r} is of unknown kind {reg.model_files.kind!r}; workers bring "
                        f"{', '.join(MODEL_KINDS)} models")
            return _check_kind(reg, reg.model_files.kind, None)
        if reg.model_files is not None and reg.model_files.kind != model.kind:
            return f"the worker serves {reg.model!r} as a {reg.model_files.kind} model; here it is a {model.kind} model"
        problem = _check_kind(reg, model.kind, model.pool.card())
        if problem is not None:
            return problem
        if model.pool.instances and reg.cards[0].block_size != model.block_size:
            return (f"worker block size {reg.cards[0].block_size} != block size {model.block_size} of the other "
                    f"instances of {reg.model!r} (start every instance of a model with the same --block-size)")
        return None

    def _model_for(self, reg: m.Register) -> ServedModel:
        """The served model a registration joins: an existing one, or a new model announced by the worker
        (with the worker's tokenizer, template and parsers) that stays while it has instances."""
        model = self.state.models.get(reg.model)
        if model is None:
            info = unpack_model_files(reg.model_files, reg.model)
            model = new_served_model(self.state, info, kind=reg.model_files.kind, reasoning_parser=None,
                                     tool_call_parser=None, configured=False)
            self.state.add_model(model)
            model.pool.router.adopt_block_size(reg.cards[0].block_size)
            log.info("model %s (%s) announced by a worker is now served", reg.model, model.kind)
        return model

    def _join(self, conn: FramedConnection, reg: m.Register) -> None:
        name = reg.name or conn.peer
        try:
            model = self._model_for(reg)
        except (ConfigError, ValueError, OSError) as exc:
            problem = f"cannot serve model {reg.model!r} from the worker's files: {exc}"
            log.warning("refused worker %s from %s: %s", name, conn.peer, problem)
            conn.send_nowait(m.encode(m.Refused(problem)))
            conn.close()
            return
        session = WorkerSession(conn, name, heartbeat_interval=self.interval, misses=self.misses,
                                on_dead=self._on_dead)
        ids = [self.state.new_worker_id() for _ in reg.cards]
        for i, (card, wid) in enumerate(zip(reg.cards, ids)):
            snap = [m.batch_from_wire(b, wid) for b in (reg.snapshots[i] if i < len(reg.snapshots) else [])]
            session.engines.append(RemoteEngine(session, i, card, wid, snap))
        # Ack before routing to it, so Generate frames never precede Registered on the wire.
        conn.send_nowait(m.encode(m.Registered(ids, self.interval)))
        for eng in session.engines:
            model.add_instance(Instance(worker_id=eng.worker_id, engine=eng, card=eng.card, local=False))
        set_model_gauges(self.state, model)
        self.sessions.add(session)
        session.start()
        log.info("worker %s joined %s with instance(s) %s", name, reg.model, ids)

    def _on_dead(self, session: WorkerSession, reason: str) -> None:
        self.sessions.discard(session)
        for eng in session.engines:
            for mdl in list(self.state.models.values()):
                inst = mdl.pool.instances.get(eng.worker_id)
                if inst is not None and inst.engine is eng:
                    mdl.pool.remove(eng.worker_id)
                    self.removed += 1
                    if not mdl.configured and not mdl.pool.instances:
                        self.state.remove_model(mdl.name)
                        log.info("model %s left with its last worker", mdl.name)
        log.warning("worker %s (instance(s) %s) removed: %s", session.name,
                    [e.worker_id for e in session.engines], reason)


def _check_kind(reg: m.Register, kind: str, other: ModelCard | None) -> str | None:
    """The instances must serve the model's kind (their card is their engine's declaration), the instances of an
    embedding model must all give vectors of one size with one Matryoshka setting, and those of a media model must
    have the same MediaLimits (the server checks a request against one instance's limits, then routes it to any), and
    those of a chat model the same input media and placeholder specs."""
    for card in reg.cards:
        if card.kind != kind:
            return (f"the worker's instance serves {card.kind} requests but {reg.model!r} is a {kind} model "
                    f"(start the worker with --model-kind {kind} and an engine registered for it)")
    if kind == "embedding":
        first = other or reg.cards[0]
        for card in reg.cards:
            if (card.embedding_dim, card.matryoshka, card.matryoshka_dimensions) != \
                    (first.embedding_dim, first.matryoshka, first.matryoshka_dimensions):
                return (f"embedding size {card.embedding_dim} (matryoshka {card.matryoshka}) != "
                        f"{first.embedding_dim} (matryoshka {first.matryoshka}) of the other instances of "
                        f"{reg.model!r}")
    if kind == "chat":
        first = other or reg.cards[0]
        for card in reg.cards:
            if (card.modalities, card.media_input) != (first.modalities, first.media_input):
                return (f"the worker's input media {card.modalities} (placeholders {card.media_input}) differ from "
                        f"{first.modalities} ({first.media_input}) of the other instances of {reg.model!r} (the "
                        "server places a request's placeholders by one instance's card, then routes it to any)")
    if kind in MEDIA_KINDS:
        first = other or reg.cards[0]
        for card in reg.cards:
            if card.media != first.media:
                return (f"the worker's {kind} limits {_limits_diff(card.media, first.media)} differ from those of "
                        f"the other instances of {reg.model!r} (start every instance of a model with the same "
                        f"options)")
    return None


def _limits_diff(a: MediaLimits, b: MediaLimits) -> str:
    """The fields where a differs from b, as `name=a's value (not b's)`."""
    names = [f.name for f in fields(a) if getattr(a, f.name) != getattr(b, f.name)]
    return ", ".join(f"{n}={getattr(a, n)!r} (not {getattr(b, n)!r})" for n in names)


def start_args(settings: Any) -> dict[str, Any]:
    """WorkerRegistry keyword arguments from server settings."""
    return dict(token=settings.worker_token, host=settings.get("worker_host") or settings.host,
                port=settings.get("worker_port") or 0, max_frame=settings.max_frame_size,
                heartbeat_interval=settings.heartbeat_interval, heartbeat_misses=settings.heartbeat_misses)
