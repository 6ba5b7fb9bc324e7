import math

import numpy as np
import pytest

from lmlab.eval import unigram_loss


def test_unigram_loss_by_hand():
    train = np.array([0, 0, 1, 2, 2, 2])
    ev = np.array([0, 2, 3])
    # add-one counts over a vocabulary of 4: [3, 2, 4, 1] / 10
    expected = -(math.log(0.3) + math.log(0.4) + math.log(0.1)) / 3
    assert unigram_loss(train, ev, 4) == pytest.approx(expected, rel=1e-12)


def test_excluded_ids_leave_both_sides():
    train = np.array([0, 0, 1, 2, 2, 2])
    ev = np.array([0, 2, 3, 3])
    # without token 3: add-one counts [3, 2, 4] / 9, and the 3s are not scored
    expected = -(math.log(3 / 9) + math.log(4 / 9)) / 2
    assert unigram_loss(train, ev, 4, exclude_ids=[3]) == pytest.approx(expected, rel=1e-12)


def test_a_uniform_corpus_costs_log_vocab():
    tokens = np.tile(np.arange(50), 20)
    assert unigram_loss(tokens, tokens, 50) == pytest.approx(math.log(50))
