"""SelfMask's losses (Shin, Albanie & Xie, CVPRW 2022): Dice per query and the objectness ranking.

There is one pseudo-mask per image, so no query is matched to it exclusively: every query's
mask is pulled towards the pseudo-mask by the Dice loss, and the queries are ranked by that
loss; the ranking loss asks the objectness scores to follow that order (a hinge without
margin on every pair where a query with a better mask scores lower than one with a worse
mask), so that the top-scoring query at inference is the one whose mask fits best.

SelfMask's released criterion (``criterion.py`` of NoelShin/selfmask) has the opposite sign:
it orders the queries by descending Dice loss (worst mask first, ``torch.argsort``) and
penalises every pair whose earlier (worse) query scores lower than the later (better) one,
i.e. it asks the worse masks to score higher. ``order="released"`` reproduces it, including
its order among queries of equal Dice loss (``torch.argsort``'s); the default follows the
stated purpose, since inference keeps the top-scoring query. Both are checked against the
released criterion in ``tests/parity/test_selfmask.py``.
"""
from __future__ import annotations

import torch

#: the Dice loss's smoothing term (MaskFormer's and SelfMask's)
SMOOTH = 1.0
#: ranking conventions: "paper" (better masks score higher) and "released" (the released code's sign)
RANK_ORDERS = ("paper", "released")


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


def ranking_loss(objectness: torch.Tensor, dice: torch.Tensor, order: str = "paper") -> torch.Tensor:
    """Objectness ranking loss, a hinge without margin summed over ordered pairs of queries.

    ``order="paper"``: ``sum over pairs (i, j) with dice_i < dice_j of max(0, o_j - o_i)``
    (a better mask should not score lower). ``order="released"``: with the queries ranked by
    descending Dice loss (``torch.argsort``), ``sum over pairs (i, j), i ranked before j, of
    max(0, o_j - o_i)`` (a worse mask should not score lower: SelfMask's released sign).

    Parameters
    ----------
    objectness : torch.Tensor
        ``(..., Q)`` objectness scores in [0, 1].
    dice : torch.Tensor
        ``(..., Q)`` Dice losses of the queries' masks (only their order is used; no gradient).
    order : str
        ``"paper"`` or ``"released"``.

    Returns
    -------
    torch.Tensor
        ``(...)`` the summed hinge over every ordered pair (0 when the scores follow the order).
    """
    dice = dice.detach()
    if order == "paper":
        first = dice.unsqueeze(-1) < dice.unsqueeze(-2)  # [i, j]: query i's mask beats query j's
    elif order == "released":
        rank = torch.argsort(torch.argsort(dice, dim=-1, descending=True), dim=-1)  # 0 = the worst mask
        first = rank.unsqueeze(-1) < rank.unsqueeze(-2)  # [i, j]: query i is ranked before query j
    else:
        raise ValueError(f"unknown ranking order {order!r}; choose from {', '.join(RANK_ORDERS)}")
    # [i, j]: max(0, o_j - o_i); relu, not clamp: a tie passes no gradient (as in the released code)
    violation = torch.relu(objectness.unsqueeze(-2) - objectness.unsqueeze(-1))
    return (violation * first).sum((-2, -1))
