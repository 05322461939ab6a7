"""Accumulative class-wise activations and gradients of the last layer (paper Eq. 3-4).

Edge ``(j, k)`` joins pre-logit feature ``k`` (the head's input) to output ``j``. For a sample ``s`` with head input
``a(s)`` and logits ``z(s)``, the cross-entropy gradient of the head's weight is closed form,

    dL/dW[j, k] = (softmax(z)_j - onehot(y)_j) * a_k,

so Eq. 4 needs no autograd: ``G[c, j, k] = sum_{s in S_c} |softmax(z(s))_j - onehot(y_s)_j| * |a_k(s)|``.
Eq. 3 is ``A[c, k] = sum_{s in S_c} |a_k(s)|`` (absolute value, so that features that can be negative still give a
distribution for the entropy of Eq. 5). The signed sums ``sum_{s in S_c} a_k(s)`` are kept too: the supporting-edge
rule of class removal needs them.

Everything is a sum, so statistics merge across batches and processes by addition. Sums are kept in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["EdgeStatistics", "check_batch", "edge_statistics"]

# Above this many gradient entries (C x R x D) the caller must restrict ``rows=``: 2**27 float64 values are 1 GiB.
MAX_GRADIENT_ELEMENTS = 2**27


def check_batch(
    features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, num_classes: int, values: bool = True
) -> None:
    """Validate one batch of head inputs, logits and labels; raise ValueError naming the problem. With
    ``values=False`` only shapes and dtypes are checked (nothing reads the tensors, so nothing waits for a device):
    for callers that check the values themselves."""
    if features.ndim != 2:
        raise ValueError(f"features must be a [N, D] matrix, got shape {tuple(features.shape)}.")
    if logits.ndim != 2 or logits.shape[0] != features.shape[0]:
        raise ValueError(
            f"logits must be a [N, K] matrix with one row per feature row, got shape {tuple(logits.shape)} "
            f"for features of shape {tuple(features.shape)}."
        )
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels must be a vector of {features.shape[0]} class indices, got shape {tuple(labels.shape)}."
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}.")
    if num_classes > logits.shape[1]:
        raise ValueError(
            f"num_classes={num_classes} exceeds the {logits.shape[1]} outputs of the head: the loss of Eq. 4 needs "
            "each class to be an output of the head being scored."
        )
    if not values:
        return
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0].item()
        raise ValueError(
            f"label {bad} is outside the head's classes [0, {num_classes}): map the labels to the head's class "
            "indices (see the model's id2label / class_names)."
        )
    if not torch.isfinite(features).all():
        raise ValueError("features contain NaN or inf: check the model's inputs and preprocessing.")
    if not torch.isfinite(logits).all():
        raise ValueError("logits contain NaN or inf: check the head's weights.")


@dataclass
class EdgeStatistics:
    """Sums over samples of each class of the last layer's edge activations (Eq. 3) and gradient magnitudes (Eq. 4).

    Attributes:
        activation: ``[C, D]``, Eq. 3: sum of ``|a_k|`` over the samples of each class.
        signed_activation: ``[C, D]``: sum of ``a_k`` (signed) over the samples of each class.
        gradient: ``[C, R, D]``, Eq. 4 for the output rows in ``rows`` (all ``K`` rows when ``rows`` is None).
        count: ``[C]``: samples seen per class.
        rows: the head's output rows kept in ``gradient``, or None for all of them.
        num_outputs: ``K``, the head's number of outputs.
    """

    activation: torch.Tensor
    signed_activation: torch.Tensor
    gradient: torch.Tensor
    count: torch.Tensor
    rows: tuple[int, ...] | None
    num_outputs: int
    _rows_on_device: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def empty(
        cls,
        num_classes: int,
        num_features: int,
        num_outputs: int | None = None,
        rows: Sequence[int] | None = None,
        device: torch.device | str | None = None,
    ) -> EdgeStatistics:
        """Zero statistics for ``num_classes`` classes, ``num_features`` head inputs and ``num_outputs``
        head outputs, kept on ``device`` (the CPU by default)."""
        num_outputs = num_classes if num_outputs is None else int(num_outputs)
        if num_classes < 1 or num_features < 1 or num_outputs < 1:
            raise ValueError(
                f"need at least one class, feature and output, got C={num_classes}, D={num_features}, K={num_outputs}."
            )
        if rows is not None:
            rows = tuple(int(r) for r in rows)
            if not rows:
                raise ValueError("rows= is empty: pass the head output rows to keep, or None for all of them.")
            bad = [r for r in rows if not 0 <= r < num_outputs]
            if bad:
                raise ValueError(f"rows {bad} are outside the head's outputs [0, {num_outputs}).")
            if len(set(rows)) != len(rows):
                raise ValueError(f"rows= has duplicates: {list(rows)}.")
        n_rows = num_outputs if rows is None else len(rows)
        if num_classes * n_rows * num_features > MAX_GRADIENT_ELEMENTS:
            raise ValueError(
                f"the gradient statistics would hold {num_classes} x {n_rows} x {num_features} values; pass rows= "
                "with the head rows you need (e.g. rows=[cls] to score class `cls`)."
            )
        f64 = dict(dtype=torch.float64, device=device)
        stats = cls(
            activation=torch.zeros(num_classes, num_features, **f64),
            signed_activation=torch.zeros(num_classes, num_features, **f64),
            gradient=torch.zeros(num_classes, n_rows, num_features, **f64),
            count=torch.zeros(num_classes, dtype=torch.long, device=device),
            rows=rows,
            num_outputs=num_outputs,
        )
        if rows is not None:
            stats._row_index()  # copied to the device now, before a pass queues work there
        return stats

    @property
    def num_classes(self) -> int:
        return self.activation.shape[0]

    @property
    def num_features(self) -> int:
        return self.activation.shape[1]

    def row_index(self, row: int) -> int:
        """Position of head output ``row`` in ``gradient``; KeyError if the row was not kept."""
        if self.rows is None:
            if not 0 <= row < self.num_outputs:
                raise KeyError(f"row {row} is outside the head's outputs [0, {self.num_outputs}).")
            return row
        try:
            return self.rows.index(row)
        except ValueError:
            raise KeyError(
                f"row {row} was not kept in these statistics (rows={list(self.rows)}): collect them with rows "
                f"including {row}."
            ) from None

    def gradient_row(self, row: int) -> torch.Tensor:
        """``[C, D]``: Eq. 4 for the edges of head output ``row``, for every class."""
        return self.gradient[:, self.row_index(row)]

    def to(self, device: torch.device | str) -> EdgeStatistics:
        """These statistics on ``device`` (self when they are there already)."""
        if self.activation.device == torch.device(device):
            return self
        moved = {name: t.to(device) for name, t in self.tensors().items()}
        return EdgeStatistics(**moved, rows=self.rows, num_outputs=self.num_outputs)

    @torch.no_grad()
    def update(
        self, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, check_values: bool = True
    ) -> EdgeStatistics:
        """Add one batch: ``features`` [N, D] (head inputs), ``logits`` [N, K], ``labels`` [N] class indices, on any
        device (the sums are added on theirs). ``check_values=False`` skips the checks that read the values (labels
        in range, finite features and logits; shapes are always checked), so that nothing waits for the device: for
        a caller that checked them already (the pass checks them on the device, ``features.BatchChecks``)."""
        labels = torch.as_tensor(labels)
        check_batch(features, logits, labels, self.num_classes, values=check_values)
        if features.shape[1] != self.num_features or logits.shape[1] != self.num_outputs:
            raise ValueError(
                f"batch has D={features.shape[1]}, K={logits.shape[1]}; these statistics expect "
                f"D={self.num_features}, K={self.num_outputs}."
            )
        if features.shape[0] == 0:
            return self
        device = self.activation.device
        a = features.to(device=device, dtype=torch.float64)
        labels = labels.to(device=device, dtype=torch.long)
        abs_a = a.abs()
        self.activation.index_add_(0, labels, abs_a)
        self.signed_activation.index_add_(0, labels, a)
        self.count.index_add_(0, labels, torch.ones_like(labels))  # bincount would read the labels' maximum

        # |softmax(z) - onehot(y)| on the kept rows only, then one matrix product per batch:
        # G[c, r, k] += sum_n onehot(y_n)_c * err[n, r] * |a[n, k]|.
        probs = torch.softmax(logits.to(device=device, dtype=torch.float64), dim=1)
        if self.rows is None:
            err = probs
            err[torch.arange(len(labels), device=device), labels] -= 1.0
        else:
            rows = self._row_index()
            err = probs[:, rows]
            hit = labels[:, None] == rows[None, :]
            err = err - hit.to(err.dtype)
        err = err.abs()
        # Temporary memory: n x 16 x R (the one-hot product) or n x R x D (the per-sample products of many
        # classes): chunk the batch to about 16M values.
        n_rows = err.shape[1]
        width = n_rows * (self.num_classes if self.num_classes <= 16 else self.num_features)
        step = max(1, 2**24 // max(1, width))
        for start in range(0, len(labels), step):
            self._add_gradient(err[start : start + step], abs_a[start : start + step], labels[start : start + step])
        return self

    def _row_index(self) -> torch.Tensor:
        """``rows`` as an index on the sums' device, copied there once (a copy from the host's pageable memory
        waits for the work queued on the device)."""
        device = self.activation.device
        if self._rows_on_device is None or self._rows_on_device.device != device:
            self._rows_on_device = torch.tensor(self.rows, device=device)
        return self._rows_on_device

    def _add_gradient(self, err: torch.Tensor, abs_a: torch.Tensor, labels: torch.Tensor) -> None:
        n, n_rows = err.shape
        if self.num_classes <= 16:
            # few classes: one matrix product, (onehot(y) x err)^T [C*R, n] @ |a| [n, D]
            onehot_err = torch.zeros(n, self.num_classes, n_rows, dtype=err.dtype, device=err.device)
            onehot_err[torch.arange(n, device=err.device), labels] = err
            self.gradient += (onehot_err.reshape(n, -1).T @ abs_a).reshape(self.gradient.shape)
            return
        # many classes: each sample's err[n, r] * |a[n, k]| added into its class' slice (N*R*D work in all, instead
        # of the C times more that the one-hot product would spend on zeros; no per-class loop, nothing read back)
        products = (err[:, :, None] * abs_a[:, None, :]).reshape(n, -1)
        self.gradient.view(self.num_classes, -1).index_add_(0, labels, products)

    def _check_compatible(self, other: EdgeStatistics) -> None:
        if (
            self.activation.shape != other.activation.shape
            or self.gradient.shape != other.gradient.shape
            or self.rows != other.rows
            or self.num_outputs != other.num_outputs
        ):
            raise ValueError(
                "cannot merge statistics of different shapes or rows: "
                f"C x D = {tuple(self.activation.shape)} vs {tuple(other.activation.shape)}, "
                f"rows {self.rows} vs {other.rows}, K {self.num_outputs} vs {other.num_outputs}."
            )

    def merge(self, other: EdgeStatistics) -> EdgeStatistics:
        """Add ``other``'s sums into these (in place); both must have the same classes, features and rows."""
        self._check_compatible(other)
        self.activation += other.activation.to(self.activation.device)
        self.signed_activation += other.signed_activation.to(self.activation.device)
        self.gradient += other.gradient.to(self.activation.device)
        self.count += other.count.to(self.activation.device)
        return self

    def tensors(self) -> dict[str, torch.Tensor]:
        """The sums as a dict of tensors (for saving and for reducing across processes)."""
        return {
            "activation": self.activation,
            "signed_activation": self.signed_activation,
            "gradient": self.gradient,
            "count": self.count,
        }


def edge_statistics(
    features: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    rows: Sequence[int] | None = None,
    batch_size: int = 4096,
) -> EdgeStatistics:
    """Eq. 3-4 over a whole feature matrix.

    Args:
        features: ``[N, D]`` inputs of the head (pre-logits).
        logits: ``[N, K]`` outputs of the head for those inputs.
        labels: ``[N]`` class index of each sample in the head being scored (the target of the loss in Eq. 4).
        num_classes: ``C``, the number of classes to accumulate over (at most ``K``).
        rows: head output rows whose gradients to keep (default: all ``K``). Scoring class ``c`` needs row ``c``.
        batch_size: samples per accumulation step (bounds the temporary memory).
    """
    features = torch.as_tensor(features)
    logits = torch.as_tensor(logits)
    labels = torch.as_tensor(labels)
    # shapes here, values batch by batch in update(): a check of the whole matrix at once held |features| (in its
    # dtype, 2.7 GB for CelebA's float64 training features) beside the features
    check_batch(features, logits, labels, num_classes, values=False)
    if features.shape[0] == 0:
        raise ValueError("no samples: edge statistics need at least one sample.")
    stats = EdgeStatistics.empty(num_classes, features.shape[1], logits.shape[1], rows=rows)
    for start in range(0, features.shape[0], batch_size):
        end = start + batch_size
        stats.update(features[start:end], logits[start:end], labels[start:end])
    return stats
