"""A head-level method from outside the package, as a user writes one: ridge regression to one-hot targets on
class- (or group-) balanced validation rows. Imported by tests/test_registry.py and through HF_FCR_PLUGINS."""

import torch

import hf_fcr

ALPHA = 1.0


def ridge(features, labels, groups, *, num_classes, seed):
    balance = labels if groups is None else groups
    g = torch.Generator().manual_seed(seed)
    smallest = int(torch.bincount(balance).min())
    rows = []
    for value in torch.unique(balance):  # every group (or class) subsampled to the smallest one's size
        members = torch.nonzero(balance == value).flatten()
        rows.append(members[torch.randperm(len(members), generator=g)][:smallest])
    rows = torch.cat(rows)
    x = torch.cat([features[rows].double(), torch.ones(len(rows), 1, dtype=torch.float64)], 1)
    y = torch.nn.functional.one_hot(labels[rows], num_classes).double()
    solution = torch.linalg.solve(x.T @ x + ALPHA * torch.eye(x.shape[1], dtype=torch.float64), x.T @ y)
    return solution[:-1].T, solution[-1], {"alpha": ALPHA, "rows": len(rows)}


hf_fcr.register_head_method("ridge", ridge, needs_groups=False)
