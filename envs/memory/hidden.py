"""What the memory tasks ask an agent to remember, for probing its LSTM (``rlstm inspect``).

One table, task name -> :class:`rlstm.inspection.HiddenVariable` s. Each reads the batched
env's tensors for the observation the agent is about to act on (``rlstm.inspection.record``
calls it before every ``env.step``), so a value is what an agent that had seen every
observation so far, this one included, should hold.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from rlstm.inspection import HiddenVariable


def _count_ab(env: Any) -> Tensor:
    # while watching (t < n) the a's seen so far, t + 1; from X on (t = n + j) the b's still
    # to emit, n - j = 2n - t. One triangle peaking at n, as a counter that counts up the
    # a's and down the b's holds it (Gers & Schmidhuber 2001).
    return (env.t + 1).minimum(2 * env.n - env.t)


def _selective_count(env: Any) -> Tensor:
    # the same with the x's skipped: a's shown so far (n - a_left counts the current symbol),
    # then b's still to emit
    watch = env.t < env.n + env.m
    return (env.n - env.a_left).where(watch, 2 * env.n + env.m - env.t)


def _count_recall_class0(env: Any) -> Tensor:
    # dealt cards of class 0 so far (the current card included): N/K minus the remaining ones;
    # class 0 is the only class counted in cum[K] and not in cum[K - 1]
    K = env.num_classes
    cum = env._v.cum[:, 0]
    return env.num_cards // K - (cum[:, K] - cum[:, K - 1])


TABLE: dict[str, tuple[HiddenVariable, ...]] = {
    "CountAB": (HiddenVariable("count", "scalar", _count_ab),),
    "SelectiveCount": (HiddenVariable("count", "scalar", _selective_count),),
    "CountRecall": (
        # the answer asked for now: dealt cards of the current query's class
        HiddenVariable("count", "scalar", lambda env: env.oracle()),
        HiddenVariable("dealt_class0", "scalar", _count_recall_class0),
    ),
    "RememberAB": (HiddenVariable("cue", "category", lambda env: env.cue),),
    "TMaze": (HiddenVariable("cue", "category", lambda env: env.cue),),
    "RepeatFirst": (HiddenVariable("first_suit", "category", lambda env: env._v.extra[:, 0]),),
    "RepeatPrevious": (HiddenVariable("target_suit", "category", lambda env: env.oracle()),),
    "MemoryChain": (HiddenVariable("answer", "category", lambda env: env.oracle()),),
}


def hidden_variables(env: Any) -> tuple[HiddenVariable, ...]:
    """The hidden variables of ``env``'s task (none for an env not in ``TABLE``)."""
    return TABLE.get(getattr(env, "name", ""), ())
