"""The aiohttp application: middlewares, OpenAI / system routes, SSE."""
