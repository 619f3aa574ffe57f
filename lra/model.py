"""The LRA model: embed -> pre-LN blocks (any zoo attention) -> pool -> head.

Encoder, pooling and head are separate so a variant swap touches only the attention;
two-document retrieval is a head option (``num_docs=2``), not a second model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import attention_zoo
from lra.config import ModelConfig


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, max_len: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.attn = attention_zoo.build(cfg.attention, cfg.dim, cfg.heads, max_len, **cfg.attention_hp)
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.ffn = nn.Sequential(nn.Linear(cfg.dim, cfg.ffn), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.ffn, cfg.dim))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask))
        return x + self.drop(self.ffn(self.ln2(x)))


class Encoder(nn.Module):
    """Token ids (B, L) -> pooled features (B, C). Token 0 is padding when ``mask_zero``."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, mask_zero: bool) -> None:
        super().__init__()
        self.cls = cfg.pooling == "cls"
        self.mask_zero = mask_zero
        max_len = seq_len + int(self.cls)
        self.padded_mean = cfg.pooling == "mean_padded"
        self.tok = nn.Embedding(vocab_size + int(self.cls), cfg.dim)  # the last id is CLS
        if cfg.embed_std is not None:
            nn.init.normal_(self.tok.weight, std=cfg.embed_std)
        self.pos = nn.Parameter(torch.randn(1, max_len, cfg.dim) * 0.02)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg, max_len) for _ in range(cfg.layers)])
        self.ln = nn.LayerNorm(cfg.dim)
        self.cls_id = vocab_size

    def forward(self, tokens: Tensor) -> Tensor:
        mask = tokens > 0 if self.mask_zero else torch.ones_like(tokens, dtype=torch.bool)  # (B, L)
        if self.cls:
            cls = torch.full_like(tokens[:, :1], self.cls_id)
            tokens = torch.cat([cls, tokens], dim=1)
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        # A sequence with no real token (an all-black image under LRA's mask) attends to all.
        mask = mask | ~mask.any(dim=1, keepdim=True)
        x = self.drop(self.tok(tokens) + self.pos[:, : tokens.shape[1]])  # (B, L, C)
        for block in self.blocks:
            x = block(x, mask)
        x = self.ln(x)
        if self.cls:
            return x[:, 0]
        m = mask[..., None].to(x.dtype)
        if self.padded_mean:
            return (x * m).mean(1)  # padded positions count as zeros
        return (x * m).sum(1) / m.sum(1)  # mean over real tokens


class Classifier(nn.Module):
    """Encoder + MLP head; with ``num_docs=2`` each document is pooled and the head sees
    ``[u, v, u*v, u-v]`` (the LRA retrieval dual encoder)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_classes: int,
                 num_docs: int = 1, mask_zero: bool = True) -> None:
        super().__init__()
        self.num_docs = num_docs
        self.encoder = Encoder(cfg, vocab_size, seq_len, mask_zero)
        width = cfg.dim * (4 if num_docs == 2 else 1)
        self.head = nn.Sequential(nn.Linear(width, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, num_classes))

    def forward(self, tokens: Tensor) -> Tensor:
        if self.num_docs == 1:
            return self.head(self.encoder(tokens))
        b, docs, l = tokens.shape  # (B, 2, L)
        pooled = self.encoder(tokens.reshape(b * docs, l)).view(b, docs, -1)
        u, v = pooled[:, 0], pooled[:, 1]
        return self.head(torch.cat([u, v, u * v, u - v], dim=-1))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
