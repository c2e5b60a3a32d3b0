"""VLM-3R fused LMM: SigLIP + CUT3R fusion + projector + Qwen2."""
