"""The proxy model of EL2N and forgetting: :class:`SoftmaxRegression`, a numpy mini-batch softmax
regression on standardised embeddings (a linear probe, as for frozen embeddings)."""

from __future__ import annotations

import numpy as np

from datascout.pool import as_float32, iter_row_chunks, softmax


class SoftmaxRegression:
    """Multinomial logistic regression trained by mini-batch SGD (numpy), the proxy model for
    EL2N and forgetting events. Features are standardised with the training mean and std.

    Parameters
    ----------
    n_classes : int
    epochs : int
        Passes over the data.
    batch_size : int
    lr : float
        SGD step size (on the mean cross-entropy of a batch).
    l2 : float
        Weight decay.
    random_state : int
        Seeds the initial weights (small normal) and the order of the batches.
    """

    def __init__(self, n_classes: int, epochs: int = 5, batch_size: int = 128, lr: float = 0.1,
                 l2: float = 1e-4, random_state: int = 0):
        self.n_classes = n_classes
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.l2 = l2
        self.random_state = random_state

    def _standardize(self, X) -> np.ndarray:
        return (np.asarray(X, dtype=np.float32) - self.mean_) / self.scale_

    def fit(self, X, y):
        """Train; ``correct_`` (epochs, N) records whether each item was classified correctly
        when it was presented (before the step on its batch), for forgetting events."""
        X = as_float32(X)
        y = np.asarray(y, dtype=np.int64)
        n, d = X.shape
        rng = np.random.default_rng(self.random_state)
        self.mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale == 0] = 1.0
        self.scale_ = scale.astype(np.float32)
        Z = self._standardize(X)
        W = (rng.standard_normal((d, self.n_classes)) * 0.01).astype(np.float32)
        b = np.zeros(self.n_classes, dtype=np.float32)
        correct = np.zeros((self.epochs, n), dtype=bool)
        for epoch in range(self.epochs):
            order = rng.permutation(n)
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                zb, yb = Z[idx], y[idx]
                logits = zb @ W + b
                correct[epoch, idx] = logits.argmax(axis=1) == yb
                p = softmax(logits)
                p[np.arange(len(idx)), yb] -= 1.0
                p /= len(idx)
                W -= self.lr * (zb.T @ p + self.l2 * W)
                b -= self.lr * p.sum(axis=0)
        self.coef_, self.intercept_, self.correct_ = W, b, correct
        return self

    def predict_proba(self, X) -> np.ndarray:
        out = np.empty((X.shape[0], self.n_classes), dtype=np.float64)
        for rows in iter_row_chunks(X.shape[0]):
            out[rows] = softmax(self._standardize(X[rows]) @ self.coef_ + self.intercept_)
        return out
