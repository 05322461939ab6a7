import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch

from hf_fcr.data import digits_dataset
from hf_fcr.demo.erm import digits_cnn, train_classifier


@pytest.fixture(scope="session")
def digits():
    """sklearn's real digits as a DatasetDict (train / test)."""
    return digits_dataset(seed=0)


@pytest.fixture(scope="session")
def _trained_digits_state(digits):
    torch.manual_seed(0)
    model = train_classifier(digits_cnn(), digits["train"], epochs=30, seed=0)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def digits_model(_trained_digits_state):
    """A fresh copy of a small CNN trained (ERM) on the real digits: about 94% test accuracy."""
    model = digits_cnn()
    model.load_state_dict(_trained_digits_state)
    return model.eval()
