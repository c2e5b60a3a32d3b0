"""Trainable LoRA on the LLM's Linear layers (the reference's r 128 / alpha 256 recipe).

`inject_lora` wraps every Linear of the language model except ``lm_head`` so that its output
is ``W x + (B A x) * alpha / r`` with A Kaiming-initialised and B zero (PEFT's init: training
starts from the base model exactly). `lora_pairs` returns the trained (A, B) per official
module name, the input `write_lora_adapter` / `save_vlm3r_adapter` expect, so the node's
loader merges them like the released adapter.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from vlm3r_ros.models.vlm3r.checkpoint import local_to_official


class LoraLinear(nn.Module):
    """A frozen Linear plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float) -> None:
        """Wrap ``base``; raises ValueError for r < 1."""
        super().__init__()
        if r < 1:
            raise ValueError('LoRA rank must be >= 1')
        self.base = base
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=base.weight.dtype,
                                               device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=base.weight.dtype,
                                               device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scale = alpha / r
        self.dropout = nn.Dropout(dropout)
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the base output plus the scaled low-rank update."""
        return self.base(x) + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scale


def inject_lora(language_model: nn.Module, r: int, alpha: float, dropout: float = 0.05
                ) -> dict[str, LoraLinear]:
    """Replace every Linear of ``language_model`` but ``lm_head`` by a `LoraLinear`.

    Returns {local module name under the LLM: wrapper}. Everything else of the LLM is frozen.
    """
    for p in language_model.parameters():
        p.requires_grad_(False)
    wrapped: dict[str, LoraLinear] = {}
    for name, module in list(language_model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f'{name}.{child_name}' if name else child_name
            if isinstance(child, nn.Linear) and full != 'lm_head':
                wrapper = LoraLinear(child, r, alpha, dropout)
                setattr(module, child_name, wrapper)
                wrapped[full] = wrapper
    return wrapped


def lora_pairs(wrapped: dict[str, LoraLinear]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return {official module name: (A, B)} float32 copies of the trained pairs."""
    out = {}
    for local, layer in wrapped.items():
        official = local_to_official(f'language_model.{local}.weight')[:-len('.weight')]
        out[official] = (layer.lora_A.detach().float().cpu().clone(),
                         layer.lora_B.detach().float().cpu().clone())
    return out


def remove_lora(language_model: nn.Module, wrapped: dict[str, LoraLinear]) -> None:
    """Put the plain Linear layers back (unmerged), e.g. before saving the base weights."""
    for local in wrapped:
        parent_name, _, child = local.rpartition('.')
        parent = language_model.get_submodule(parent_name) if parent_name else language_model
        setattr(parent, child, wrapped[local].base)
