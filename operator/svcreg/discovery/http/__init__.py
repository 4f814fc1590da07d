"""The HTTP side of svcreg (aiohttp): health, readiness and metrics; discovery builds on it."""
