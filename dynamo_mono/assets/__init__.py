"""Data files shipped with dynamo-mono (the embedded tiny ChatML tokenizer) and the script that builds them."""

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
TINY_CHATML_DIR = ASSETS_DIR / "tiny-chatml"
