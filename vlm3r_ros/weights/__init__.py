"""Weights shipped with the package (the embedded default); see MODEL_CARD.md here."""
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
#: The trained small CUT3R (``Cut3rConfig.small()``) that the tiny profile loads by default.
CUT3R_SMALL = WEIGHTS_DIR / 'cut3r_small.safetensors'
