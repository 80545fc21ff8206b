"""SelfMask's losses (Shin, Albanie & Xie, CVPRW 2022): Dice per query and the objectness ranking.

There is one pseudo-mask per image, so no query is matched to it exclusively: every query's
mask is pulled towards the pseudo-mask by the Dice loss, and the queries are ranked by that
loss; the ranking loss asks the objectness scores to follow that order (a hinge without
margin on every pair where a query with a better mask scores lower than one with a worse
mask), so that the top-scoring query at inference is the one whose mask fits best. (SelfMask's
released criterion sorts the queries by descending Dice loss and penalises the negative entries
of the upper triangle, which, as read here, asks for the opposite order; this module follows
the stated purpose, since inference keeps the top-scoring query.)
"""
from __future__ import annotations

import torch

#: the Dice loss's smoothing term (MaskFormer's and SelfMask's)
SMOOTH = 1.0


def dice_loss(masks: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice loss of each predicted mask against one target.

    ``1 - (2 sum(p g) + 1) / (sum(p) + sum(g) + 1)``.

    Parameters
    ----------
    masks : torch.Tensor
        ``(..., Q, P)`` mask probabilities in [0, 1] over P pixels.
    target : torch.Tensor
        ``(..., P)`` binary target, broadcastable against ``masks`` without the Q axis.

    Returns
    -------
    torch.Tensor
        ``(..., Q)`` losses in [0, 1).
    """
    target = target.unsqueeze(-2)
    inter = (masks * target).sum(-1)
    return 1 - (2 * inter + SMOOTH) / (masks.sum(-1) + target.sum(-1) + SMOOTH)


def ranking_loss(objectness: torch.Tensor, dice: torch.Tensor) -> torch.Tensor:
    """Objectness ranking loss: ``sum over pairs (i, j) with dice_i < dice_j of max(0, o_j - o_i)``.

    Parameters
    ----------
    objectness : torch.Tensor
        ``(..., Q)`` objectness scores in [0, 1].
    dice : torch.Tensor
        ``(..., Q)`` Dice losses of the queries' masks (only their order is used; no gradient).

    Returns
    -------
    torch.Tensor
        ``(...)`` the summed hinge over every ordered pair (0 when the scores follow the masks).
    """
    dice = dice.detach()
    better = dice.unsqueeze(-1) < dice.unsqueeze(-2)  # [i, j]: query i's mask beats query j's
    violation = (objectness.unsqueeze(-2) - objectness.unsqueeze(-1)).clamp(min=0)  # [i, j]: o_j - o_i
    return (violation * better).sum((-2, -1))
