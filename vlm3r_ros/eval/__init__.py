"""Synthetic scenes, ground-truth QA, bags and VSI-Bench scoring."""
