"""Masking: Dirichlet token budgets and input/target selection per sample.

(Skeleton: the helper that owns this file implements Masker.)
"""

from __future__ import annotations

from pydantic import Field

from pairless.config import Config


class MaskingConfig(Config):
    """Token budgets per sample and the Dirichlet that splits them across a sample's view."""

    input_budget: int = Field(64, ge=1)
    target_budget: int = Field(64, ge=1)
    # A mixture of Dirichlet concentrations: each sample draws one entry uniformly.
    alphas: list[float] = [0.5]
    empty_input_fraction: float = Field(0.05, ge=0.0, le=1.0)  # samples trained with no input at all
