"""Media input overhead per image: fetch (loopback HTTP and data: URLs) + decode on a cache miss, and the
decoded-media cache hit path (fetch + SHA-256 + lookup), p50 / p90 per image, through MediaInput.load (the code
path of a chat request's image part).

Run: python tests/benchmarks/bench_media_fetch.py [--repeat 30] [--sizes 256,1024,2048]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
from aiohttp import web  # noqa: E402
from PIL import Image  # noqa: E402

from dynamo_mono.media.cache import MediaCache  # noqa: E402
from dynamo_mono.media.decode import DecodeLimits, media_io_options  # noqa: E402
from dynamo_mono.media.fetch import FetchPolicy, MediaFetcher  # noqa: E402
from dynamo_mono.media.parts import MediaPart  # noqa: E402
from dynamo_mono.serving.media_input import MediaInput  # noqa: E402


def photo(size: int, fmt: str) -> bytes:
    """A smooth gradient with noise (compresses like a photo, not like random pixels)."""
    rng = np.random.default_rng(size)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([x, y, (x + y) / 2], axis=-1) * 200 + rng.normal(0, 12, (size, size, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, fmt, quality=90)
    return buf.getvalue()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def timed(media: MediaInput, url: str, repeat: int, *, fresh: bool) -> list[float]:
    io_opts = media_io_options(None, media.limits)
    out = []
    for i in range(repeat):
        if fresh:
            media.cache.clear()
        t0 = time.perf_counter()
        await media.load(MediaPart("image", url, "bench"), io_opts)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def main_async(a: argparse.Namespace) -> None:
    files = {f"/{s}.{fmt.lower()}": photo(s, fmt) for s in a.sizes for fmt in ("PNG", "JPEG")}

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=files[request.path], content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fetcher = MediaFetcher(FetchPolicy(allow_internal_media=True, max_media_bytes=64 << 20))
    media = MediaInput(fetcher, DecodeLimits(), MediaCache(1 << 30))
    print(f"\n{'image':<16} {'bytes':>9} {'source':>6} {'miss p50':>9} {'miss p90':>9} {'hit p50':>8} {'hit p90':>8}"
          "   (ms per image; miss = fetch + hash + decode, hit = fetch + hash + cache lookup)")
    try:
        for path, data in files.items():
            for source in ("http", "data"):
                url = (f"http://127.0.0.1:{port}{path}" if source == "http"
                       else f"data:image/{path.rsplit('.', 1)[1]};base64," + base64.b64encode(data).decode())
                await timed(media, url, 2, fresh=True)  # warm-up: imports, first connection
                miss = await timed(media, url, a.repeat, fresh=True)
                hit = await timed(media, url, a.repeat, fresh=False)
                size = path.strip("/")
                print(f"{size:<16} {len(data):>9} {source:>6} {statistics.median(miss):>9.2f} {pct(miss, .9):>9.2f} "
                      f"{statistics.median(hit):>8.2f} {pct(hit, .9):>8.2f}")
    finally:
        await runner.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[256, 1024, 2048])
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
