"""Hierarchical attention network (Yang et al. 2016) for document classification.

classify(ids [B, S, W], word_mask [B, S, W], sent_mask [B, S])
    -> logits [B, C], word_attention [B, S, W], sentence_attention [B, S]

Words: embedding, a bidirectional GRU per sentence, then attention with a learned context
vector u_w as the query (with "additive": u_w^T tanh(W h + b), Yang's formulation).
Sentences: the pooled sentence vectors go through a second bidirectional GRU and a second
attention with its own context vector u_s; the document vector feeds a linear classifier.

Option `max_pool` (off in Yang's model) concatenates a masked max-pool of the GRU states
to each attention context.

Padding sentences (all words masked) give zero sentence vectors and get sentence weight
exactly 0; nothing in forward depends on tensor values in Python, so one ONNX graph with
dynamic B, S, W covers every shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.attention import AttentionSpec, build_attention
from models.seq2seq import BiGRUEncoder
from runtime.text import PAD_ID, UNK_ID


@dataclass
class HANConfig:
    """Sizes of a HAN. The family truncates documents to `max_sents` sentences of at most
    `max_words` words; "location" attention cannot attend past these limits."""

    vocab: int
    num_classes: int
    emb_dim: int = 100
    hidden: int = 50  # per direction, at the word and the sentence level
    attention: str = "additive"
    attn_hidden: int = 100
    dropout: float = 0.3  # on word embeddings, sentence vectors and the document vector
    word_dropout: float = 0.0  # training only: this share of valid words becomes <unk>
    max_sents: int = 20  # the family keeps at most this many sentences per document
    max_words: int = 60  # ... and at most this many words per sentence
    max_pool: bool = False  # concatenate a masked max-pool to both attention poolings
    num_heads: int = 4  # multihead attention only


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Max of x [B, S, D] over valid positions of mask [B, S] -> [B, D]; 0 for an empty row."""
    filled = x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min)  # [B, S, D]
    any_valid = mask.any(dim=1, keepdim=True).to(x.dtype)  # [B, 1]
    return filled.max(dim=1).values * any_valid  # [B, D]


class HAN(nn.Module):
    """Word-level and sentence-level BiGRU + attention, then a linear classifier."""

    def __init__(self, config: HANConfig) -> None:
        super().__init__()
        c = self.config = config
        if c.vocab <= PAD_ID or c.num_classes < 2:
            raise ValueError(f"HAN needs vocab > 1, >= 2 classes; got {c.vocab}, {c.num_classes}")
        states = 2 * c.hidden  # the attention keys; every context has this size (Dq == Dk)
        pooled = 2 * states if c.max_pool else states  # sentence and document vectors
        self.embedding = nn.Embedding(c.vocab, c.emb_dim, padding_idx=PAD_ID)
        self.word_encoder = BiGRUEncoder(c.emb_dim, c.hidden)
        self.sent_encoder = BiGRUEncoder(pooled, c.hidden)

        def spec(max_len: int) -> AttentionSpec:
            # The query is a learned vector of the key size, so every registered score fits.
            return AttentionSpec(
                query_dim=states,
                key_dim=states,
                hidden_dim=c.attn_hidden,
                num_heads=c.num_heads,
                max_len=max_len,
            )

        self.word_attention = build_attention(c.attention, spec(c.max_words))
        self.sent_attention = build_attention(c.attention, spec(c.max_sents))
        self.word_context = nn.Parameter(torch.randn(states) * 0.1)  # u_w [2H]
        self.sent_context = nn.Parameter(torch.randn(states) * 0.1)  # u_s [2H]
        self.drop = nn.Dropout(c.dropout)
        self.classifier = nn.Linear(pooled, c.num_classes)

    def forward(self, ids: Tensor, word_mask: Tensor, sent_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """ids [B, S, W] long, word_mask [B, S, W] bool, sent_mask [B, S] bool.

        Both masks are right-padded (a valid prefix); a sentence counts only where
        sent_mask is set and it has a valid word.
        """
        B, S, W = ids.shape
        word_mask = word_mask & sent_mask.unsqueeze(-1)  # [B, S, W]; no words in padding sentences
        sent_mask = word_mask.any(dim=-1)  # [B, S]
        if self.training and self.config.word_dropout > 0:
            drop = torch.rand(ids.shape, device=ids.device) < self.config.word_dropout  # [B, S, W]
            ids = ids.masked_fill(drop & word_mask, UNK_ID)  # [B, S, W]
        rows_ids = ids.reshape(B * S, W)  # [B*S, W]
        rows_mask = word_mask.reshape(B * S, W)  # [B*S, W]
        x = self.drop(self.embedding(rows_ids))  # [B*S, W, E]
        h, _ = self.word_encoder(x, rows_mask)  # [B*S, W, 2H]
        u_w = self.word_context.unsqueeze(0).expand(B * S, -1)  # [B*S, 2H]
        sents, word_weights = self.word_attention(u_w, h, rows_mask)  # [B*S, 2H], [B*S, W]
        if self.config.max_pool:
            sents = torch.cat([sents, masked_max(h, rows_mask)], dim=-1)  # [B*S, 4H]
        sents = self.drop(sents.reshape(B, S, -1))  # [B, S, 2H or 4H]
        g, _ = self.sent_encoder(sents, sent_mask)  # [B, S, 2H]
        u_s = self.sent_context.unsqueeze(0).expand(B, -1)  # [B, 2H]
        doc, sent_weights = self.sent_attention(u_s, g, sent_mask)  # [B, 2H], [B, S]
        if self.config.max_pool:
            doc = torch.cat([doc, masked_max(g, sent_mask)], dim=-1)  # [B, 4H]
        logits = self.classifier(self.drop(doc))  # [B, C]
        return logits, word_weights.reshape(B, S, W), sent_weights
