"""Core option definitions (HTTP server, model, parsers, request limits and lifecycle)."""

from __future__ import annotations

from dynamo_mono.media.fetch_options import MEDIA_FETCH_OPTIONS
from dynamo_mono.media.input_options import MEDIA_INPUT_OPTIONS
from dynamo_mono.config import Option
from dynamo_mono.lora.options import LORA_OPTIONS
from dynamo_mono.planner.options import PLANNER_OPTIONS
from dynamo_mono.worker.options import SERVER_WORKER_OPTIONS

MiB = 1024 * 1024

TLS_CERT_PATH = Option("tls_cert_path", str, None, "TLS certificate chain (PEM): serve HTTPS instead of HTTP. "
                       "Needs --tls-key-path.", group="http server")
TLS_KEY_PATH = Option("tls_key_path", str, None, "Unencrypted private key (PEM) of --tls-cert-path.",
                      group="http server")

SERVER_OPTIONS = [
    Option("host", str, "127.0.0.1", "Address the HTTP server binds to.", group="http server", aliases=("--http-host",)),
    Option("port", int, 8000, "TCP port of the HTTP server (0 = pick a free port).", group="http server",
           min=0, max=65535, aliases=("--http-port",)),
    Option("api_server_count", int, 0, "HTTP processes accepting on the port (SO_REUSEPORT) around one core process "
           "that owns engines, routing, admission and metrics; 0 = auto: cores // 4, between 1 and 8 (1 on a "
           "machine of fewer than 8 cores).", group="http server", min=0, max=64),
    Option("max_body_size", int, 32 * MiB, "Largest accepted request body in bytes (413 above).",
           group="http server", min=1024),
    Option("api_key", str, None, "If set, /v1/* requires `Authorization: Bearer KEY` (or `x-api-key`).",
           group="http server"),
    Option("cors_origins", str, None, "Comma-separated allowed CORS origins ('*' for any); unset = CORS off.",
           group="http server"),
    Option("anthropic_api", bool, True, "Serve the Anthropic Messages API (/v1/messages).", group="http server",
           aliases=("--enable-anthropic-api",)),
    Option("log_level", str, "info", "Log level.", group="http server",
           choices=("debug", "info", "warning", "error")),
    Option("ready_file", str, None, "Write 'host:port' ('https://host:port' with TLS) to this file once the "
           "server is ready (for scripts).", group="http server"),
    TLS_CERT_PATH,
    TLS_KEY_PATH,
]

MODEL_OPTIONS = [
    Option("engine", str, "mocker", "Engine plugin serving the model (see `dynamo-mono plugins`); "
           "`serve --engine NAME --help` lists that engine's own options.", group="model"),
    Option("model_kind", str, "chat", "What the model serves: chat (chat, completions, messages), embedding, image, "
           "video or audio.", group="model", choices=("chat", "embedding", "image", "video", "audio")),
    Option("model", str, None, "Hugging Face model directory (tokenizer.json, tokenizer_config.json, config.json); "
           "unset = the embedded tiny ChatML tokenizer.", group="model", aliases=("--model-path",)),
    Option("served_model_name", str, None, "Model name clients use (default: the directory name).", group="model",
           aliases=("--model-name",)),
    Option("max_model_len", int, None, "Context length in tokens (default: from config.json).", group="model", min=16),
    Option("chat_template", str, None, "Path of a Jinja chat template replacing the model's.", group="model",
           aliases=("--custom-jinja-template",)),
    Option("num_instances", int, 1, "Engine instances started in this process (0 = only remote workers).",
           group="model", min=0, max=1024),
    Option("reasoning_parser", str, None, "Reasoning parser for the model's output (see `dynamo-mono plugins`).",
           group="parsers", aliases=("--dyn-reasoning-parser",)),
    Option("tool_call_parser", str, None, "Tool-call parser for the model's output (see `dynamo-mono plugins`).",
           group="parsers", aliases=("--dyn-tool-call-parser",)),
]

LIMIT_OPTIONS = [
    Option("max_messages", int, 4096, "Most messages in one chat request.", group="request limits", min=1),
    Option("max_n", int, 16, "Largest accepted `n` (choices per request).", group="request limits", min=1),
    Option("max_stop_sequences", int, 16, "Most stop strings per request.", group="request limits", min=0),
    Option("max_stop_chars", int, 1024, "Longest accepted stop string, in characters.", group="request limits",
           min=1),
    Option("max_top_logprobs", int, 20, "Largest accepted top_logprobs / logprobs.", group="request limits", min=0),
    Option("max_tokens_limit", int, None, "Upper bound on max_tokens (default: the context length).",
           group="request limits", min=1),
    Option("max_embedding_inputs", int, 2048, "Most inputs in one /v1/embeddings request.", group="request limits",
           min=1),
    Option("embedding_batch_size", int, 64, "Inputs of a /v1/embeddings request sent to an engine instance as "
           "one batch; the batches of a request are routed and run concurrently.", group="request limits", min=1),
]

LIFECYCLE_OPTIONS = [
    Option("migration_limit", int, 0, "Times a request that fails mid-stream is re-dispatched to another instance.",
           group="lifecycle", min=0, max=100),
    Option("request_timeout", float, None, "Seconds after which a request is ended with an error (unset = none).",
           group="lifecycle", min=0, min_exclusive=True),
    Option("max_inflight_requests", int, None, "Requests generating at once over all models; more wait in a "
           "priority queue (unset = no limit).", group="lifecycle", min=1),
    Option("max_inflight_per_model", int, None, "Requests generating at once per model (unset = no limit).",
           group="lifecycle", min=1),
    Option("max_queue_length", int, 1024, "Requests that may wait for admission; more get 429.", group="lifecycle",
           min=0),
    Option("max_queue_wait", float, 60.0, "Seconds a request may wait for admission before 429.",
           group="lifecycle", min=0, min_exclusive=True),
    Option("shutdown_timeout", float, 30.0, "Seconds to drain in-flight requests on SIGTERM.", group="lifecycle",
           min=0),
]

RESPONSES_OPTIONS = [
    Option("responses_store_size", int, 1024, "Most responses kept for GET /v1/responses/{id} and "
           "previous_response_id (finished ones are evicted oldest first; running ones never).",
           group="responses", min=1),
    Option("responses_store_ttl", float, 3600.0, "Seconds a finished stored response is kept.", group="responses",
           min=0, min_exclusive=True),
]

MEDIA_OPTIONS = [
    Option("media_output_fs_url", str, None, "Where media asked for with response_format=url is stored: a local "
           "directory or an fsspec URL (file:///srv/media, s3://bucket/prefix with s3fs installed, ...); unset = a "
           "temporary directory removed at shutdown.", group="media"),
    Option("media_output_http_url", str, None, "Public base URL under which --media-output-fs-url is served (URLs "
           "become BASE/PATH); unset = the server serves stored media itself at GET /media/PATH.", group="media"),
    Option("media_retention_seconds", float, 3600.0, "Seconds a stored media file is kept before it is deleted.",
           group="media", min=0, min_exclusive=True),
    Option("media_max_stored_bytes", int, 2 * 1024 ** 3, "Most bytes of stored media; the oldest files are deleted "
           "to stay under it.", group="media", min=1),
    Option("max_media_prompt_chars", int, 32000, "Longest prompt (images, video) or input text (speech), in "
           "characters.", group="media", min=1),
]

CONFIG_OPTIONS = [
    Option("config", str, None, "YAML file listing the models to serve (name, engine, model, kind, instances, "
           "parsers, and the engine's own options under `options`); replaces the single-model flags.",
           group="model"),
]

CORE_OPTIONS: list[Option] = [*SERVER_OPTIONS, *CONFIG_OPTIONS, *MODEL_OPTIONS, *LIMIT_OPTIONS, *LIFECYCLE_OPTIONS,
                              *RESPONSES_OPTIONS, *MEDIA_OPTIONS, *MEDIA_FETCH_OPTIONS, *MEDIA_INPUT_OPTIONS,
                              *SERVER_WORKER_OPTIONS, *LORA_OPTIONS, *PLANNER_OPTIONS]
