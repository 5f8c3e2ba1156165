"""rlstm: recurrent PPO with LSTM agents for partially observable Atari and memory tasks."""

__version__ = "0.1.0"
