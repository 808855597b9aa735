"""The simulation's oracle and stopping watch (used by :mod:`datascout.simulate`).

* :class:`SimulatedOracle` answers from the ground truth, wrongly at ``label_noise`` (a
  :class:`~datascout.labels.NoisyOracle`: every answer of an item an independent, reproducible
  draw), and, with ``review_fraction``, runs the campaign's review every round: the label audit
  (out-of-fold probabilities + confident learning) on the labels held, its most suspect
  single-answer labels asked again (a second answer; a third when the two disagree; the
  majority wins). Its :meth:`~SimulatedOracle.report` measures the audit against the truth.
* :class:`StoppingWatch` measures, every round, what the stopping rules read
  (:mod:`datascout.stopping`) and says at which round each fires.
"""

from __future__ import annotations

import numpy as np

from datascout.exceptions import ValidationError
from datascout.labels import (NOISE_KINDS, NoisyOracle, audit_labels, calibrated_positive_probs, confusable_classes,
                              majority_vote)
from datascout.stopping import (
    RULES,
    add_gain,
    recall_estimate,
    remaining_from_sample,
    round_signals,
    stopping_report,
    stopping_rounds,
)


def check_quality_config(cfg) -> None:
    """Validate the label-noise, review and stopping settings of a simulation config."""
    if not 0.0 <= cfg.label_noise < 1.0:  # NaN fails too
        raise ValidationError(f"label_noise must be in [0, 1) but is {cfg.label_noise}")
    if cfg.noise_kind not in NOISE_KINDS:
        raise ValidationError(f"unknown noise kind {cfg.noise_kind!r}: expected one of {', '.join(NOISE_KINDS)}")
    if not 0.0 <= cfg.review_fraction <= 1.0:
        raise ValidationError(f"review_fraction must be in [0, 1] but is {cfg.review_fraction}")
    if cfg.stop_set < 1:
        raise ValidationError(f"stop_set must be >= 1 but is {cfg.stop_set}")
    if cfg.label_budget is not None and cfg.label_budget <= 0:
        raise ValidationError(f"label_budget must be > 0 but is {cfg.label_budget}")


class SimulatedOracle:
    """Answers for pool positions; ``truth`` is every item's true task class (by position)."""

    def __init__(self, cfg, X, truth, n_classes: int, pool_pos):
        self.cfg = cfg
        self.X = X
        self.truth = np.asarray(truth, dtype=np.int64)
        self.n_classes = n_classes
        self.noisy = cfg.label_noise > 0
        self.review_on = cfg.review_fraction > 0
        confusion_to = None
        if self.noisy and cfg.noise_kind == "confusion":
            confusion_to = confusable_classes(np.asarray(X[pool_pos], dtype=np.float32), self.truth[pool_pos],
                                              n_classes)
        self.noise_ = NoisyOracle(self.truth, n_classes, cfg.label_noise, kind=cfg.noise_kind,
                                  confusion_to=confusion_to, random_state=cfg.seed)
        self.answers_ = 0
        self.reviewed_ = set()
        self.review_totals_ = {"reviewed": 0, "changed": 0, "fixed": 0, "broken": 0}

    def answer(self, positions, attempt: int = 0) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        self.answers_ += len(positions)
        if not self.noisy:
            return self.truth[positions].copy()
        return self.noise_.answer(positions, attempt)

    def _audit(self, learner):
        pos = np.sort(learner.labeled_positions)
        y = learner.labels_[pos]
        counts = np.bincount(y, minlength=self.n_classes)
        keep = counts[y] >= 2  # cross-validation needs 2 labels of a class
        if len(np.unique(y[keep])) < 2:
            return None
        full = np.full(len(learner.labels_), -1, dtype=np.int64)
        full[pos[keep]] = y[keep]
        return audit_labels(self.X, full, n_classes=self.n_classes, folds=5, outlier_quantile=0.0,
                            random_state=self.cfg.seed)

    def relabel(self, learner, positions, attempt: int = 1) -> dict:
        """Ask ``positions`` again as the campaign's review does (a second answer, a third where
        the two disagree, the majority wins) and replace the labels that change. The answers are
        attempts ``attempt`` and ``attempt + 1`` (fresh annotators)."""
        positions = np.asarray(positions, dtype=np.int64)
        first = learner.labels_[positions]
        second = self.answer(positions, attempt=attempt)
        third = np.full(len(positions), -1, dtype=np.int64)
        split = second != first
        if split.any():
            third[split] = self.answer(positions[split], attempt=attempt + 1)
        new = majority_vote(np.column_stack([first, second, third]))
        changed = new != first
        if changed.any():
            learner.relabel(positions[changed], new[changed])
        t = self.truth[positions]
        return {"reviewed": int(len(positions)), "changed": int(changed.sum()),
                "fixed": int((changed & (new == t)).sum()), "broken": int((changed & (first == t)).sum())}

    def review(self, learner, batch_size: int, rnd: int) -> dict | None:
        """The review of round ``rnd`` (from round 1, when ``review_fraction`` > 0): the audit's
        most suspect labels not reviewed yet, at most ``ceil(review_fraction * batch_size)``."""
        if not self.review_on or rnd == 0:
            return None
        audit = self._audit(learner)
        if audit is None:
            return None
        room = int(np.ceil(self.cfg.review_fraction * batch_size))
        picks = [p for p in audit.positions.tolist() if p not in self.reviewed_][:room]
        self.reviewed_.update(picks)
        if not picks:
            return {"reviewed": 0, "changed": 0, "fixed": 0, "broken": 0}
        got = self.relabel(learner, picks)
        for k in self.review_totals_:
            self.review_totals_[k] += got[k]
        return got

    def round_figures(self, learner, reviewed) -> dict:
        if not (self.noisy or self.review_on):
            return {}
        pos = learner.labeled_positions
        return {"answers": int(self.answers_),
                "wrong_labels": int((learner.labels_[pos] != self.truth[pos]).sum()),
                "reviewed": None if reviewed is None else reviewed["reviewed"],
                "review_changed": None if reviewed is None else reviewed["changed"]}

    def report(self, learner, X_test, y_test) -> dict:
        """How noisy the final labels are, how well the label audit finds the wrong ones
        (precision and recall of its flags; precision at the number of true flips, where it equals
        recall), and the test accuracy after re-asking the audit's flagged items versus as many
        random labeled items (the same review procedure; labels spent on each counted)."""
        from sklearn.metrics import accuracy_score

        from datascout.models import FittedModel

        pos = np.sort(learner.labeled_positions)
        wrong = learner.labels_[pos] != self.truth[pos]
        out = {"rate": float(self.cfg.label_noise), "kind": self.cfg.noise_kind, "answers": int(self.answers_),
               "labeled": int(len(pos)), "wrong_labels": int(wrong.sum()), "review": dict(self.review_totals_)}
        audit = self._audit(learner)
        if audit is None:
            return out
        flips = set(pos[wrong].tolist())
        flagged = audit.positions.tolist()
        hit = sum(p in flips for p in flagged)
        ranked = audit.checked[np.argsort(audit.quality, kind="stable")]  # most suspect first
        m = len(flips)
        top = ranked[:m].tolist()
        hit_m = sum(p in flips for p in top)
        out["audit"] = {"flagged": len(flagged), "precision": hit / len(flagged) if flagged else None,
                        "recall": hit / m if m else None, "at_true_flips": m,
                        "precision_at_true_flips": hit_m / m if m else None}

        def accuracy(labels_):
            model = FittedModel(learner.model, self.n_classes).fit(np.asarray(self.X[pos], dtype=np.float32),
                                                                   labels_[pos])
            return float(accuracy_score(y_test, model.predict_proba(X_test).argmax(axis=1)))

        n = len(flagged)
        before = learner.labels_.copy()
        rel = {"n": n, "accuracy_before": accuracy(before)}
        if n:
            rng = np.random.default_rng([self.cfg.seed, 0x72656C])
            for name, chosen in (("flagged", np.asarray(flagged, dtype=np.int64)),
                                 ("random", rng.choice(pos, size=n, replace=False))):
                answers_before = self.answers_
                got = self.relabel(learner, chosen, attempt=3)  # annotators the run has not asked
                rel[name] = {**got, "answers": int(self.answers_ - answers_before),
                             "accuracy": accuracy(learner.labels_),
                             "wrong_labels": int((learner.labels_[pos] != self.truth[pos]).sum())}
                learner.labels_[:] = before  # each arm starts from the same labels
                self.answers_ = answers_before
        out["relabel"] = rel
        return out


class StoppingWatch:
    """Each round's stopping measurements on a fixed stop set (``stop_set`` pool items drawn
    once, with a stream of their own so that the run's other draws do not change)."""

    def __init__(self, cfg, X, pool_pos, n_classes: int, binary: bool, model, truth):
        rng = np.random.default_rng([cfg.seed, 0x73746F70])
        size = min(cfg.stop_set, len(pool_pos))
        self.stop = np.sort(rng.choice(pool_pos, size=size, replace=False))
        self.X_stop = np.asarray(X[self.stop], dtype=np.float32)
        self.X = X
        self.cfg = cfg
        self.n_classes = n_classes
        self.binary = binary
        self.n_pool = len(pool_pos)
        self.pool_positives = int(np.asarray(truth)[pool_pos].sum()) if binary else None
        self.truth = np.asarray(truth)
        self.previous_ = None
        self.selected_ = {}

    def selected(self, learner, ids, answers) -> None:
        """Before the batch is taught: the previous model's view of it."""
        if learner.model_ is None:
            return
        p = learner.model_.predict_proba(np.asarray(self.X[np.asarray(ids)], dtype=np.float32))
        self.selected_ = {"selected_probs": p, "selected_pred": p.argmax(axis=1), "selected_labels": answers}

    def after_fit(self, learner, y_test) -> dict:
        probs = learner.model_.predict_proba(self.X_stop)
        unl = learner.labels_[self.stop] < 0
        sig = round_signals(stop_probs=probs, previous_stop_pred=self.previous_, unlabeled_mask=unl,
                            n_classes=self.n_classes, **self.selected_)
        self.previous_, self.selected_ = probs.argmax(axis=1), {}
        if self.binary:
            lab = np.sort(learner.labeled_positions)
            found = int((learner.labels_[lab] == 1).sum())  # the answers, as a campaign knows them
            n_unl = learner.n_unlabeled
            # from the scores: the model's probabilities on the stop set's unlabeled items, scaled up
            cal = calibrated_positive_probs(np.asarray(self.X[lab], dtype=np.float32), learner.labels_[lab],
                                            probs[unl, 1], model=learner.model, random_state=0)
            rem, ci = remaining_from_sample(float(np.sum(probs[unl, 1] if cal is None else cal)),
                                            int(unl.sum()), n_unl)
            scores = recall_estimate(found, rem, ci) if rem is not None else None
            # from an audit sample: the test split (uniform, never trained on) plays it here;
            # positives in the pool = its prevalence x the pool
            tot, tci = remaining_from_sample(float(np.sum(y_test == 1)), len(y_test), self.n_pool)
            audit = recall_estimate(found, max(tot - found, 0.0), [max(tci[0] - found, 0.0), max(tci[1] - found, 0.0)])
            sig.update({"recall_estimate": audit["value"], "recall_lower": audit["ci"][0],
                        "recall_upper": audit["ci"][1],
                        "recall_scores": None if scores is None else scores["value"],
                        "recall_scores_lower": None if scores is None else scores["ci"][0],
                        "recall_true": int((self.truth[lab] == 1).sum()) / max(self.pool_positives, 1)})
        return sig

    def report(self, rounds: list, metric: str) -> tuple:
        add_gain(rounds, metric)
        rules = {n: r.threshold for n, r in RULES.items() if self.binary or not n.startswith("recall")}
        fired = stopping_rounds(rounds, rules=rules, budget=self.cfg.label_budget)
        fired = {n: None if i is None else rounds[i]["round"] for n, i in fired.items()}
        index = {r["round"]: i for i, r in enumerate(rounds)}
        detail = stopping_report(rounds, {n: None if r is None else index[r] for n, r in fired.items()},
                                 metric=metric, rules=rules)
        return fired, detail
