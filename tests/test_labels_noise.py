"""Simulated annotators (NoisyOracle), consensus (majority vote, CROWDLAB) and simulate's
--label-noise / review: checked against counts computed here from the truth."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from datascout.exceptions import LabelingError, ValidationError
from datascout.labels import NoisyOracle, confusable_classes, crowdlab_consensus, majority_vote
from datascout.simulate import SimulationConfig, simulate


def test_noisy_oracle_rate_reproducibility_and_independent_attempts():
    truth = np.arange(20000) % 5
    o = NoisyOracle(truth, 5, 0.2, random_state=3)
    a = o.answer(np.arange(20000))
    wrong = a != truth
    sd = np.sqrt(0.2 * 0.8 / 20000)
    assert abs(wrong.mean() - 0.2) < 5 * sd
    assert ((a >= 0) & (a < 5)).all()
    # a wrong answer is uniform over the 4 other classes
    off = (a[wrong] - truth[wrong]) % 5
    assert np.bincount(off, minlength=5)[0] == 0
    assert np.allclose(np.bincount(off, minlength=5)[1:] / wrong.sum(), 0.25, atol=0.03)
    # order-free and reproducible: the same item gets the same answer whatever is asked with it
    assert np.array_equal(o.answer([7, 3, 11]), a[[7, 3, 11]])
    assert np.array_equal(NoisyOracle(truth, 5, 0.2, random_state=3).answer(np.arange(20000)), a)
    # another attempt is an independent draw: both wrong about rate^2 of the time
    b = o.answer(np.arange(20000), attempt=1)
    both = (wrong & (b != truth)).mean()
    assert abs(both - 0.04) < 5 * np.sqrt(0.04 * 0.96 / 20000)
    assert NoisyOracle(truth, 5, 0.0).answer(np.arange(50)).tolist() == truth[:50].tolist()


def test_noisy_oracle_confusion_and_per_class_rates():
    truth = np.array([0, 1, 2] * 1000)
    o = NoisyOracle(truth, 3, [0.0, 0.5, 0.5], kind="confusion", confusion_to=[1, 2, 0], random_state=0)
    a = o.answer(np.arange(len(truth)))
    assert (a[truth == 0] == 0).all()  # class 0 is never mislabeled
    assert set(a[(truth == 1) & (a != 1)]) == {2} and set(a[(truth == 2) & (a != 2)]) == {0}
    assert 0.4 < (a[truth == 1] != 1).mean() < 0.6
    with pytest.raises(ValidationError, match="noise rate must be in"):
        NoisyOracle(truth, 3, 1.5).answer([0])
    with pytest.raises(ValidationError, match="confusion_to"):
        NoisyOracle(truth, 3, 0.1, kind="confusion").answer([0])


def test_confusable_classes_by_hand():
    X = np.array([[1, 0], [1, 0.05], [0.9, 0.2], [0.85, 0.25], [0, 1], [0.1, 1]], dtype=np.float32)
    y = np.array([0, 0, 1, 1, 2, 2])
    # centroids: class 0 ~ (1, 0.025), class 1 ~ (0.875, 0.225), class 2 ~ (0.05, 1): 0<->1, 2 -> 1
    assert confusable_classes(X, y, 3).tolist() == [1, 0, 1]


def test_majority_vote_by_hand():
    A = [[0, 1, 1], [2, 2, 0], [0, 1, -1], [-1, -1, -1], [3, -1, -1]]
    # row 3: a 0/1 tie goes to the answer given last (1); row 4: no answer
    assert majority_vote(A).tolist() == [1, 2, 1, -1, 3]


def test_crowdlab_weighs_the_good_annotator_over_two_poor_ones():
    rng = np.random.default_rng(0)
    n, K = 400, 4
    truth = rng.integers(0, K, n)
    A = np.column_stack([NoisyOracle(truth, K, r, random_state=j).answer(np.arange(n))
                         for j, r in enumerate([0.05, 0.45, 0.45])])
    probs = np.full((n, K), 0.4 / 3)
    probs[np.arange(n), truth] = 0.6  # a soft model, right on 90% of the items
    probs = np.where(rng.random((n, 1)) < 0.1, np.roll(probs, 1, axis=1), probs)
    labels, quality = crowdlab_consensus(A, probs, annotators=["good", "s1", "s2"])
    mv = majority_vote(A)
    # the majority follows the two poor annotators where they agree with each other; CROWDLAB does not
    assert (labels == truth).mean() > (mv == truth).mean() + 0.05
    assert quality["good"] > max(quality["s1"], quality["s2"])
    # where every annotator and the model agree, that is the consensus
    same = (A == A[:, :1]).all(axis=1) & (probs.argmax(axis=1) == A[:, 0])
    assert same.sum() > 50 and (labels[same] == A[same, 0]).all()
    with pytest.raises(ValidationError, match="answers has 400 rows but probs has 3"):
        crowdlab_consensus(A, probs[:3])


def _digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def test_simulate_label_noise_is_reproducible_and_counted():
    X, y = _digits()
    cfg = SimulationConfig(strategy="margin", initial=60, batch_size=40, rounds=3, label_noise=0.2, seed=1)
    a, b = simulate(X, y, cfg), simulate(X, y, cfg)
    assert [r["accuracy"] for r in a["rounds"]] == [r["accuracy"] for r in b["rounds"]]
    assert a["noise"] == b["noise"]
    n = a["noise"]
    assert n["labeled"] == 180 and n["answers"] == 180  # no review: one answer per label
    # about 20% of the 180 answers are wrong (binomial, 5 sd)
    assert abs(n["wrong_labels"] - 36) < 5 * np.sqrt(180 * 0.2 * 0.8)
    assert [r["wrong_labels"] for r in a["rounds"]] == sorted(r["wrong_labels"] for r in a["rounds"])
    au = n["audit"]
    assert 0 <= au["precision"] <= 1 and au["at_true_flips"] == n["wrong_labels"]
    rel = n["relabel"]
    assert rel["n"] == au["flagged"] and rel["flagged"]["reviewed"] == rel["random"]["reviewed"] == rel["n"]
    # re-asking the flagged labels leaves fewer wrong labels than re-asking random ones
    assert rel["flagged"]["wrong_labels"] < rel["random"]["wrong_labels"]
    clean = simulate(X, y, SimulationConfig(strategy="margin", initial=60, batch_size=40, rounds=3, seed=1))
    assert "noise" not in clean and "wrong_labels" not in clean["rounds"][0]


def test_simulate_review_fixes_wrong_labels():
    X, y = _digits()
    base = dict(strategy="margin", initial=100, batch_size=50, rounds=4, label_noise=0.2, seed=0)
    plain = simulate(X, y, SimulationConfig(**base))
    rev = simulate(X, y, SimulationConfig(**base, review_fraction=0.5))
    r = rev["noise"]["review"]
    assert r["reviewed"] == sum(x["reviewed"] for x in rev["rounds"][1:]) > 0
    assert r["changed"] == r["fixed"] + (r["changed"] - r["fixed"]) and r["fixed"] > r["broken"]
    # every review answer is counted: a second answer per reviewed label, a third on disagreement
    assert rev["noise"]["answers"] >= rev["noise"]["labeled"] + r["reviewed"]
    assert rev["noise"]["wrong_labels"] < plain["noise"]["wrong_labels"]


@pytest.mark.parametrize("field, value, message", [
    ("label_noise", 1.0, "label_noise must be in"), ("noise_kind", "odd", "unknown noise kind"),
    ("review_fraction", -0.1, "review_fraction must be in"), ("stop_set", 0, "stop_set must be"),
    ("label_budget", 0, "label_budget must be"),
])
def test_simulate_rejects_bad_quality_settings(field, value, message):
    X, y = _digits()
    with pytest.raises(ValidationError, match=message):
        simulate(X, y, SimulationConfig(initial=20, batch_size=10, rounds=1, **{field: value}))


def test_learner_relabel_checks_its_input():
    from datascout.loop import ActiveLearner

    X, y = _digits()
    learner = ActiveLearner(X[:50], 10, "entropy", random_state=0)
    learner.teach(np.arange(10), y[:10])
    learner.relabel([3], [(y[3] + 1) % 10])
    assert learner.labels_[3] == (y[3] + 1) % 10
    with pytest.raises(LabelingError, match="not labeled"):
        learner.relabel([20], [1])
    with pytest.raises(LabelingError, match="more than once"):
        learner.relabel([1, 1], [1, 2])
