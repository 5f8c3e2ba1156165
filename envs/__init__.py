"""Env backends behind :mod:`rlstm.vec`: memory (batched torch tasks), atari, gymnasium."""
