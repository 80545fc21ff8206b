"""The Fiedler vector of a dense affinity graph: the second-smallest generalised eigenvector
of ``(D - W) x = lambda D x``, shared by TokenCut and Deep Spectral Methods.

The generalised problem is solved in its symmetric normalised form. With
``M = D^-1/2 W D^-1/2`` and ``y = D^1/2 x``, ``(D - W) x = lambda D x`` becomes
``M y = (1 - lambda) y``, so the second-smallest ``lambda`` is the second-largest eigenvalue
of ``M``. The largest one is exactly 1 with eigenvector ``u = sqrt(d) / ||sqrt(d)||``;
subtracting ``2 u u^T`` moves it to -1 (the bottom of M's spectrum, which lies in [-1, 1]),
so the wanted pair is the single largest eigenpair of the deflated matrix, found by ARPACK
(``scipy.sparse.linalg.eigsh``) from a seeded start vector: deterministic, and much faster
than the dense generalised solver (see ``benchmarks/bench_tokencut.py``). The start vector is
``numpy.random.default_rng(seed).uniform(-1, 1, N)`` made orthogonal to ``u``: the methods pass
the run's ``--seed``, so it depends on the seed and the graph's size only (the same for an
image whatever else the run holds), and seed 0 gives the vector of earlier versions. ``x = D^-1/2 y``
is D-normalised (``x^T D x = 1``) like ``scipy.linalg.eigh(D - W, D)``'s eigenvectors; the
sign is arbitrary, and callers fix it by their own rule.
"""
from __future__ import annotations

import numpy as np

#: below this many nodes the dense solver is used (ARPACK needs a Krylov space smaller than n)
_DENSE_BELOW = 64
#: Krylov subspace size: larger converges in fewer restarts on near-degenerate spectra
_NCV = 32


def fiedler_vector(affinity: np.ndarray, *, method: str = "sparse", seed: int = 0, tol: float = 1e-10
                   ) -> tuple[float, np.ndarray]:
    """Second-smallest generalised eigenpair of ``(D - W) x = lambda D x``.

    Parameters
    ----------
    affinity : np.ndarray
        ``(N, N)`` symmetric, non-negative ``W`` with positive row sums.
    method : {"sparse", "dense"}
        ``"sparse"``: ARPACK on the deflated normalised matrix (the default);
        ``"dense"``: ``scipy.linalg.eigh(D - W, D)``, the reference.
    seed : int
        Seeds ARPACK's start vector (``default_rng(seed).uniform(-1, 1, N)``), so the result
        is reproducible; a non-negative integer (the run's ``--seed``).
    tol : float
        ARPACK's relative tolerance on the eigenvalue.

    Returns
    -------
    lam : float
        The eigenvalue (in [0, 2]).
    x : np.ndarray
        ``(N,)`` float64 eigenvector with ``x^T D x = 1``; its sign is arbitrary.
    """
    import scipy.linalg

    W = np.asarray(affinity, dtype=np.float64)
    n = W.shape[0]
    if W.ndim != 2 or W.shape[1] != n or n < 2:
        raise ValueError(f"affinity must be a square matrix with at least 2 nodes, got shape {W.shape}")
    d = W.sum(axis=1)
    if not np.all(d > 0):
        raise ValueError("every node needs a positive degree (row sum of the affinity)")
    if method == "dense":
        values, vectors = scipy.linalg.eigh(np.diag(d) - W, np.diag(d), subset_by_index=[1, 1])
        return float(values[0]), vectors[:, 0]
    if method != "sparse":
        raise ValueError(f"method must be 'sparse' or 'dense', got {method!r}")
    inv_sqrt = 1.0 / np.sqrt(d)
    M = W * inv_sqrt[:, None]
    M *= inv_sqrt[None, :]
    u = np.sqrt(d) / np.linalg.norm(np.sqrt(d))
    M -= 2.0 * np.outer(u, u)  # the trivial pair (1, u) moves to (-1, u)
    if n < _DENSE_BELOW:
        values, vectors = np.linalg.eigh(M)
        mu, y = values[-1], vectors[:, -1]
    else:
        from scipy.sparse.linalg import eigsh

        start = np.random.default_rng(seed).uniform(-1.0, 1.0, n)
        start -= u * (u @ start)
        values, vectors = eigsh(M, k=1, which="LA", v0=start, ncv=min(n - 1, _NCV), tol=tol)
        mu, y = values[0], vectors[:, 0]
    x = y * inv_sqrt
    return float(1.0 - mu), x / np.sqrt(x @ (d * x))
