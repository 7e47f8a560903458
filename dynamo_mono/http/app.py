"""Builds the aiohttp application: middlewares, core routes, plugin routes."""

from __future__ import annotations

from aiohttp import web

from dynamo_mono.http import (embeddings_routes, lora_routes, media_routes, openai_routes, responses_routes,
                              system_routes)
from dynamo_mono.http.middleware import (add_response_headers, draining, errors, make_auth, make_cors,
                                         request_ids)
from dynamo_mono.http.state import STATE, ServerState
from dynamo_mono.media.store import MediaStore


def create_app(state: ServerState) -> web.Application:
    """The application for a prepared ServerState (models already loaded)."""
    s = state.settings
    app = web.Application(
        client_max_size=s.max_body_size,
        middlewares=[request_ids, errors, make_cors(s.cors_origins), make_auth(s.api_key), draining],
    )
    app[STATE] = state
    app.on_response_prepare.append(add_response_headers)
    system_routes.add_routes(app)
    openai_routes.add_routes(app)
    responses_routes.add_routes(app)
    embeddings_routes.add_routes(app)
    lora_routes.add_routes(app)
    media_routes.add_routes(app, MediaStore(s.media_output_fs_url, s.media_output_http_url,
                                            retention_s=s.media_retention_seconds,
                                            max_bytes=s.media_max_stored_bytes))
    if s.anthropic_api:
        from dynamo_mono.http import anthropic_routes

        anthropic_routes.add_routes(app)
    state.plugins.add_routes(app)
    return app
