"""Options of the guarded media fetcher (client-named URLs: chat media parts, input_reference, LoRA sources)."""

from __future__ import annotations

from dynamo_mono.config import Option

MiB = 1024 * 1024

DEFAULT_MAX_MEDIA_BYTES = 20 * MiB
DEFAULT_MEDIA_FETCH_TIMEOUT = 20.0
DEFAULT_MAX_CONCURRENT_MEDIA_FETCHES = 16
DEFAULT_MAX_MEDIA_REDIRECTS = 3

_GROUP = "media input"

MEDIA_FETCH_OPTIONS = [
    Option("allow_internal_media", bool, False,
           "Let clients name http:// media URLs and hosts on loopback, private (RFC 1918, CGNAT, ULA) and other "
           "non-public addresses. Cloud-metadata endpoints, link-local, multicast and unspecified addresses stay "
           "refused.", group=_GROUP, env="DYN_MM_ALLOW_INTERNAL"),
    Option("allowed_local_media_path", str, None,
           "Directory whose files clients may name as file:// media URLs (symlinks resolved; nothing outside it). "
           "Unset = file:// refused.", group=_GROUP, env="DYN_MM_LOCAL_PATH", metavar="DIR"),
    Option("allowed_media_domains", str, None,
           "Comma-separated host names media URLs may name (exact match, every redirect hop included); "
           "unset = any public host.", group=_GROUP, metavar="HOSTS"),
    Option("max_media_bytes", int, DEFAULT_MAX_MEDIA_BYTES,
           "Largest media item fetched or decoded from a data: URL, in bytes.", group=_GROUP, min=1),
    Option("media_fetch_timeout", float, DEFAULT_MEDIA_FETCH_TIMEOUT,
           "Total seconds one media fetch may take (queueing, DNS, connect, redirects, body).", group=_GROUP,
           min=0, min_exclusive=True),
    Option("max_concurrent_media_fetches", int, DEFAULT_MAX_CONCURRENT_MEDIA_FETCHES,
           "Media fetches running at once; further fetches wait (within --media-fetch-timeout).", group=_GROUP,
           min=1),
    Option("max_media_redirects", int, DEFAULT_MAX_MEDIA_REDIRECTS,
           "HTTP redirects followed per media URL (each hop checked like the first).", group=_GROUP, min=0, max=20),
]
