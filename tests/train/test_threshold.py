import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from mitotype.errors import MitotypeError
from mitotype.train.threshold import balanced_accuracy_curve, tune_threshold


def test_hand_made_optimum():
    # By probability: N .05, N .10, N .15, N .25 | A .45, N .55, A .65, A .75, A .85  (4 atypical, 5 normal).
    # Cut in (0.25, 0.45]: sensitivity 4/4, specificity 4/5 -> 0.9 (the unique best);
    # cut in (0.55, 0.65]: 3/4 and 5/5 -> 0.875; cut in (0.45, 0.55]: 3/4, 4/5 -> 0.775.
    labels = [0, 0, 0, 0, 1, 0, 1, 1, 1]
    probs = [0.05, 0.10, 0.15, 0.25, 0.45, 0.55, 0.65, 0.75, 0.85]
    t = tune_threshold(labels, probs)
    assert t == pytest.approx(0.35)
    assert balanced_accuracy_score(labels, np.asarray(probs) >= t) == pytest.approx(0.9)


def test_tie_takes_middle_of_widest_optimal_interval():
    # Perfect separation for any t in (0.2, 0.7]: the middle is 0.45.
    assert tune_threshold([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9]) == pytest.approx(0.45)
    # By probability: N .1, A .3, A .35, N .4, A .5, A .6. Two disjoint optimal intervals with balanced
    # accuracy 0.75: (0.1, 0.3] (sens 1, spec 1/2) and (0.4, 0.5] (sens 1/2, spec 1); the wider one wins.
    labels = [0, 1, 1, 0, 1, 1]
    probs = [0.1, 0.3, 0.35, 0.4, 0.5, 0.6]
    _, _, bacc = balanced_accuracy_curve(labels, probs)
    assert bacc.max() == pytest.approx(0.75)
    assert np.isclose(bacc, 0.75).sum() == 2
    assert tune_threshold(labels, probs) == pytest.approx(0.2)
    # Equally wide: the one whose middle is nearer 0.5.
    assert tune_threshold([0, 1, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == pytest.approx(0.45)


def test_matches_brute_force_on_random_scores():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    probs = np.clip(0.3 * labels + rng.normal(0.4, 0.2, 300), 0, 1).round(2)  # many ties
    t = tune_threshold(labels, probs)

    def bacc(cut):
        calls = probs >= cut
        return 0.5 * (calls[labels == 1].mean() + (~calls[labels == 0]).mean())

    best = max(bacc(c) for c in np.linspace(0, 1, 1001))
    assert bacc(t) == pytest.approx(best)
    assert 0.0 <= t <= 1.0


def test_all_one_score_and_extremes():
    # Identical scores: calling all or none gives 0.5; any threshold is as good; stays inside [0, 1].
    t = tune_threshold([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5])
    assert 0.0 <= t <= 1.0
    # Atypical scored 1.0 exactly: threshold 1.0 still calls it (p >= t).
    t = tune_threshold([0, 1], [0.0, 1.0])
    assert 0.0 < t <= 1.0


@pytest.mark.parametrize("labels, probs", [([1, 1, 1], [0.1, 0.2, 0.3]), ([0, 1], [0.1]),
                                           ([0, 1], [0.1, float("nan")]), ([0, 2], [0.1, 0.2])])
def test_bad_input_is_a_clear_error(labels, probs):
    with pytest.raises(MitotypeError, match="threshold tuning"):
        tune_threshold(labels, probs)
