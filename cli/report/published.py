"""The seed's models: published parameter counts and, where the literature gives one, total training
compute. Nothing here is measured by attnserve; each figure names its source.

Training compute comes from Brown et al. (2020), "Language Models are Few-Shot Learners", Table D.1
(total train compute in petaflop/s-days, 1 PF-day = 8.64e19 operations); it follows their 6 x
parameters x training tokens rule (3 x for T5, whose tokens see half of its encoder-decoder). GPT-2,
Megatron-LM and Turing-NLG published no total training compute: they appear by size only.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Published(BaseModel):
    """One published model: name, year, parameters, total training compute (PF-days, None when not
    published) and where the figures come from."""

    model_config = ConfigDict(frozen=True)

    name: str
    year: int
    parameters: float
    petaflop_s_days: float | None
    source: str


GPT3_TABLE = "Brown et al. 2020, Language Models are Few-Shot Learners, Table D.1"

SEED_MODELS: tuple[Published, ...] = (
    Published(
        name="BERT-Large", year=2018, parameters=340e6, petaflop_s_days=6.16,
        source="Devlin et al. 2019, BERT: Pre-training of Deep Bidirectional Transformers for Language "
        f"Understanding (parameters); {GPT3_TABLE} (compute)",
    ),
    Published(
        name="GPT-2", year=2019, parameters=1.5e9, petaflop_s_days=None,
        source="Radford et al. 2019, Language Models are Unsupervised Multitask Learners",
    ),
    Published(
        name="Megatron-LM", year=2019, parameters=8.3e9, petaflop_s_days=None,
        source="Shoeybi et al. 2019, Megatron-LM: Training Multi-Billion Parameter Language Models Using Model "
        "Parallelism",
    ),
    Published(
        name="T5-11B", year=2019, parameters=11e9, petaflop_s_days=382.0,
        source="Raffel et al. 2020, Exploring the Limits of Transfer Learning with a Unified Text-to-Text "
        f"Transformer (parameters); {GPT3_TABLE} (compute)",
    ),
    Published(
        name="Turing-NLG", year=2020, parameters=17e9, petaflop_s_days=None,
        source="Rosset 2020, Turing-NLG: A 17-billion-parameter language model by Microsoft (Microsoft Research blog)",
    ),
    Published(
        name="GPT-3", year=2020, parameters=175e9, petaflop_s_days=3640.0,
        source=f"{GPT3_TABLE} (175B parameters, 3.64e3 PF-days)",
    ),
)  # fmt: skip
