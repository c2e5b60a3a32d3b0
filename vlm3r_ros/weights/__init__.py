"""Weights shipped with the package (the embedded default); see MODEL_CARD.md here."""
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
#: The trained small CUT3R (``Cut3rConfig.small()``) that the tiny profile loads by default.
CUT3R_SMALL = WEIGHTS_DIR / 'cut3r_small.safetensors'
#: The instruction-tuned small VLM-3R in the official release layout (``base/`` +
#: ``adapter/``), loaded by the tiny profile by default; see MODEL_CARD_VLM3R.md.
VLM3R_SMALL = WEIGHTS_DIR / 'vlm3r_small'
#: Its blind twin (same size and budget, trained without frames): the evaluation's control.
VLM3R_SMALL_BLIND = WEIGHTS_DIR / 'vlm3r_small_blind'
#: ``vlm3r-eval-model``'s held-out report of VLM3R_SMALL (the model card's table).
VLM3R_SMALL_EVAL = WEIGHTS_DIR / 'vlm3r_small_eval_test.json'
